//! Test guest: `GET /vars/<name>` answers 200 with the variable's value, or
//! 500 with the interface's error, exactly as spin-sdk reports it.

use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::{http_service, variables};

#[http_service]
async fn read_variable(req: Request) -> impl IntoResponse {
    let name = req.uri().path().trim_start_matches("/vars/").to_string();
    match variables::get(&name).await {
        Ok(value) => (StatusCode::OK, value),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:?}")),
    }
}
