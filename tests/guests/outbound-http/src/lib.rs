//! Test guest: `GET /...?url=<URL>` sends `GET <URL>` through `wasi:http` and
//! answers 200 with `<status>\n<body>` of what came back, or 500 with the
//! `ErrorCode`'s Debug text when the request failed (denied, refused, ...).
//!
//! The URL is everything after `url=`, taken verbatim (not percent-decoded),
//! so a test can nest one: `/a?url=http://self/b?url=http://127.0.0.1:8080/`.
//! Before it, `method=POST&` sends a POST (with a small body) instead,
//! `size=<n>&` makes that body `n` bytes long, and `key=<k>&` adds an
//! `Idempotency-Key: <k>` header.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn fetch(req: Request) -> Result<impl IntoResponse, http::Error> {
    let mut query = req.uri().query().unwrap_or("");
    let mut method = "GET";
    let mut key = None;
    let mut size = None;
    loop {
        if let Some(rest) = query.strip_prefix("method=") {
            let (value, rest) = rest.split_once('&').unwrap_or((rest, ""));
            method = value;
            query = rest;
        } else if let Some(rest) = query.strip_prefix("size=") {
            let (value, rest) = rest.split_once('&').unwrap_or((rest, ""));
            let Ok(value) = value.parse::<usize>() else {
                return http::Response::builder()
                    .status(400)
                    .body(format!("size={value} is not a number of bytes"));
            };
            size = Some(value);
            query = rest;
        } else if let Some(rest) = query.strip_prefix("key=") {
            let (value, rest) = rest.split_once('&').unwrap_or((rest, ""));
            key = Some(value);
            query = rest;
        } else {
            break;
        }
    }
    let Some(url) = query.strip_prefix("url=") else {
        return http::Response::builder()
            .status(400)
            .body("expected ?url=<URL>".to_string());
    };
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let body = match (method, size) {
        ("GET", _) => bytes::Bytes::new(),
        (_, Some(size)) => bytes::Bytes::from(vec![b'x'; size]),
        (_, None) => bytes::Bytes::from_static(b"payload"),
    };
    let request = match request.body(spin_sdk::http::FullBody::new(body)) {
        Ok(request) => request,
        Err(error) => {
            return http::Response::builder()
                .status(400)
                .body(error.to_string());
        }
    };
    let (status, body) = match spin_sdk::http::send(request).await {
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
