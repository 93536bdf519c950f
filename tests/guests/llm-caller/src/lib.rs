//! Test guest: `GET /` asks `fermyon:spin/llm` to infer and answers 200
//! with the result's text, or 500 with the error's `Debug` form.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::{http_service, llm};

#[http_service]
async fn infer(_req: Request) -> Result<impl IntoResponse, http::Error> {
    let (status, body) = match llm::infer(llm::InferencingModel::Llama2Chat, "Say hello") {
        Ok(result) => (200, result.text),
        Err(error) => (500, format!("{error:?}")),
    };
    http::Response::builder().status(status).body(body)
}
