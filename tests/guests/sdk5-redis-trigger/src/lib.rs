//! A Spin 3 Redis-triggered app built with spin-sdk 5's `#[redis_component]`
//! (the `fermyon:spin/inbound-redis` export): each message is appended to
//! the `received` key of the default key-value store (one line each); a
//! message `fail` makes the handler fail instead. `GET /` answers the lines.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::key_value::Store;
use spin_sdk::{http_component, redis_component};

/// The key the messages are recorded under.
const RECEIVED: &str = "received";

#[redis_component]
fn on_message(message: bytes::Bytes) -> anyhow::Result<()> {
    if message.as_ref() == b"fail" {
        anyhow::bail!("asked to fail");
    }
    let store = Store::open_default()?;
    let mut received = store.get(RECEIVED)?.unwrap_or_default();
    received.extend_from_slice(&message);
    received.push(b'\n');
    store.set(RECEIVED, &received)?;
    Ok(())
}

#[http_component]
fn read(_request: Request) -> Response {
    let received = Store::open_default()
        .ok()
        .and_then(|store| store.get(RECEIVED).ok().flatten())
        .unwrap_or_default();
    Response::new(200, received).into_response()
}
