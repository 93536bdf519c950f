//! The {{name}} component: answers every request with a greeting.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

/// Greets the caller, naming the path it asked for.
#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    format!("Hello from {{name}}! You asked for {}\n", req.uri().path())
}
