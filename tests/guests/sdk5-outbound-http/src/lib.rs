//! Checks outbound HTTP (`wasi:http/outgoing-handler@0.2`) as an app built
//! with spin-sdk 5.x sends it: `GET /?url=<url>` POSTs `ping` to `<url>`
//! through `spin_sdk::http::send`, expects 200 with the body
//! `POST <path> ping` (what the caller's server echoes), and answers 200
//! `ok`, 500 with what went wrong, or 403 naming the interface's error when
//! the host refuses the request.

use spin_sdk::http::{ErrorCode, IntoResponse, Method, Request, Response, SendError};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> Response {
    let url = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("url="))
        .unwrap_or_default()
        .to_owned();
    let outgoing = Request::builder()
        .method(Method::Post)
        .uri(url.as_str())
        .header("content-type", "text/plain")
        .body("ping")
        .build();
    match spin_sdk::http::send::<_, Response>(outgoing).await {
        Ok(response) => match check(&url, &response) {
            Ok(()) => Response::new(200, "ok"),
            Err(reason) => Response::new(500, reason),
        },
        Err(SendError::Http(ErrorCode::HttpRequestDenied)) => {
            Response::new(403, "http-request-denied")
        }
        Err(error) => Response::new(500, format!("send: {error:?}")),
    }
    .into_response()
}

/// Whether the server echoed the request as expected.
fn check(url: &str, response: &Response) -> Result<(), String> {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| &rest[slash..]))
        .unwrap_or("/");
    let want = format!("POST {path} ping");
    let body = String::from_utf8_lossy(response.body());
    if *response.status() == 200 && body == want {
        Ok(())
    } else {
        Err(format!(
            "got {} `{body}`, want 200 `{want}`",
            response.status()
        ))
    }
}
