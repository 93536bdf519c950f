//! Test guest: echoes the request as JSON so tests can check what the host
//! passed to the component — the method, the path and query as the component
//! saw them, every `spin-*` header the host added (routing, client address),
//! and the length of the body it read in full.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

/// Answers 200 with `{"method", "path_and_query", "headers": {spin-* name:
/// value}, "body_length"}`, or 500 with the error if the body cannot be read.
#[http_service]
async fn echo(req: Request) -> Result<impl IntoResponse, http::Error> {
    // `HeaderName`s are already lowercase; a repeated header keeps its last value,
    // which is enough because the host sets each `spin-*` header once.
    let spin_headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("spin-"))
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value.into())
        })
        .collect();
    let path_and_query = req.uri().path_and_query().map_or("", |pq| pq.as_str());
    let mut echo = serde_json::json!({
        "method": req.method().as_str(),
        "path_and_query": path_and_query,
        "headers": spin_headers,
    });
    match req.into_body().bytes().await {
        Ok(body) => echo["body_length"] = body.len().into(),
        Err(error) => {
            return http::Response::builder()
                .status(500)
                .body(format!("reading the request body failed: {error:?}"));
        }
    }
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(echo.to_string())
}
