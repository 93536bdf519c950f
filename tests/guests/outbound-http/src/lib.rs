//! Test guest: `GET /...?url=<URL>` sends `GET <URL>` through `wasi:http` and
//! answers 200 with `<status>\n<body>` of what came back, or 500 with the
//! `ErrorCode`'s Debug text when the request failed (denied, refused, ...).
//!
//! The URL is everything after `url=`, taken verbatim (not percent-decoded),
//! so a test can nest one: `/a?url=http://self/b?url=http://127.0.0.1:8080/`.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn fetch(req: Request) -> Result<impl IntoResponse, http::Error> {
    let query = req.uri().query().unwrap_or("");
    let Some(url) = query.strip_prefix("url=") else {
        return http::Response::builder()
            .status(400)
            .body("expected ?url=<URL>".to_string());
    };
    let (status, body) = match spin_sdk::http::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().bytes().await {
                Ok(bytes) => (
                    200,
                    format!("{status}\n{}", String::from_utf8_lossy(&bytes)),
                ),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        Err(error) => (500, format!("{error:?}")),
    };
    http::Response::builder().status(status).body(body)
}
