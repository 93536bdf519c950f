//! Checks `fermyon:spin/sqlite@2.0.0` as an app built with spin-sdk 3 uses
//! it: `GET /?db=<label>` creates a table, writes a row of every value type
//! and reads it back, answering 200 `ok`, 403 with the interface's error when
//! the host refuses the database, or 500 with what went wrong.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

mod v2 {
    use spin_sdk::sqlite as api;
    include!("exercise.rs");
}

#[http_component]
fn handle(request: Request) -> Response {
    let label = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("db="))
        .unwrap_or("default")
        .to_owned();
    match v2::exercise(&label, "sdk3_v2") {
        Ok(()) => Response::new(200, "ok"),
        Err(reason) if reason == "access-denied" => Response::new(403, reason),
        Err(reason) => Response::new(500, reason),
    }
    .into_response()
}
