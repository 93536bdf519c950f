//! Test guest: `GET /<key>` answers `wasi:config/store.get(key)` (200 with
//! the value, 404 when there is none); `GET /` answers `get-all` as
//! `key=value` lines.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

wit_bindgen::generate!({
    path: "wit-deps/spin-sdk",
    world: "wasi:config/imports@0.2.0-draft-2024-09-27",
    generate_all,
});

use wasi::config::store;

#[http_service]
async fn read(req: Request) -> Result<impl IntoResponse, http::Error> {
    let key = req.uri().path().trim_start_matches('/').to_owned();
    let (status, body) = if key.is_empty() {
        match store::get_all() {
            Ok(pairs) => (
                200,
                pairs
                    .iter()
                    .map(|(key, value)| format!("{key}={value}\n"))
                    .collect(),
            ),
            Err(error) => (500, format!("{error:?}")),
        }
    } else {
        match store::get(&key) {
            Ok(Some(value)) => (200, value),
            Ok(None) => (404, format!("no config value `{key}`")),
            Err(error) => (500, format!("{error:?}")),
        }
    };
    http::Response::builder().status(status).body(body)
}
