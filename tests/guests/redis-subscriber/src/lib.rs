//! Test guest: each message on its Redis channel is appended to the
//! `received` key of the default key-value store (one line each); a message
//! `fail` makes the handler fail instead. `GET /` answers the lines.

use bytes::Bytes;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::key_value::Store;
use spin_sdk::{http_service, redis_subscriber};

/// The key the messages are recorded under.
const RECEIVED: &str = "received";

#[redis_subscriber]
async fn on_message(message: Bytes) -> anyhow::Result<()> {
    if message.as_ref() == b"fail" {
        anyhow::bail!("asked to fail");
    }
    let store = Store::open_default().await?;
    let mut received = store.get(RECEIVED).await?.unwrap_or_default();
    received.extend_from_slice(&message);
    received.push(b'\n');
    store.set(RECEIVED, &received).await?;
    Ok(())
}

#[http_service]
async fn read(_req: Request) -> Result<impl IntoResponse, http::Error> {
    let received = match Store::open_default().await {
        Ok(store) => store.get(RECEIVED).await.ok().flatten().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    http::Response::builder()
        .status(200)
        .body(String::from_utf8_lossy(&received).into_owned())
}
