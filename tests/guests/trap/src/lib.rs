//! Test guest: panics — a trap for the host — when the path ends with `/boom`,
//! so tests can check that the host answers 500 and keeps serving.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

/// Traps on `…/boom`; otherwise answers 200 `still alive`.
#[http_service]
async fn trap(req: Request) -> impl IntoResponse {
    if req.uri().path().ends_with("/boom") {
        panic!("asked to trap by {}", req.uri().path());
    }
    "still alive"
}
