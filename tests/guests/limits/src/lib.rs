//! Test guest for the host's limits:
//! - `/slow`: prints `slow request started`, answers 200 ms later (without
//!   holding a CPU);
//! - `/loop`: spins forever without yielding;
//! - `/grow`: allocates until its memory runs out;
//! - `/trap`: panics (a wasm trap);
//! - `/overflow`: recurses until its stack overflows;
//! - `/consume`: reads the whole request body and answers its length;
//! - anything else: answers `ok` at once.

use std::time::Duration;

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn limits(req: Request) -> impl IntoResponse {
    match req.uri().path() {
        "/slow" => {
            // Tests count these lines to know a request is in flight.
            println!("slow request started");
            spin_sdk::time::sleep(Duration::from_millis(200)).await;
            "slow ok".to_string()
        }
        "/loop" => spin_forever(),
        "/trap" => panic!("the guest asked for a trap"),
        "/overflow" => format!("depth {}", recurse(std::hint::black_box(0))),
        "/consume" => match req.into_body().bytes().await {
            Ok(body) => format!("read {} bytes", body.len()),
            Err(error) => format!("reading the body failed: {error:?}"),
        },
        "/grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is really committed.
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => "ok".to_string(),
    }
}

fn spin_forever() -> String {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Recurses until the stack overflows: each frame keeps a buffer alive so
/// the stack really grows, and the opaque condition (never true) keeps the
/// compiler from seeing the recursion never ends.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    if std::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1) + frame[1]
}
