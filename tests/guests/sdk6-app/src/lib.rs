//! Test guest: an app as Spin 4.0 users build it, with spin-sdk 6 (WASI
//! `0.3.0-rc-2026-03-15`). By path:
//!
//! - `/hello`: 200 `hello from spin-sdk 6`;
//! - `/kv/set?<key>=<value>` and `/kv/get?<key>`: the default key-value
//!   store (200 with the value, 404 when there is none);
//! - `/variable?<name>`: the variable's value;
//! - `/outbound?<url>`: `GET <url>`, answering `<status>\n<body>`;
//!
//! and 500 with the error's Debug text when a call fails.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::key_value::Store;

/// What a handler answers: a status and a text body.
type Reply = (u16, String);

#[http_service]
async fn handle(request: Request) -> Result<impl IntoResponse, http::Error> {
    let query = request.uri().query().unwrap_or_default().to_owned();
    let (status, body) = match request.uri().path() {
        "/sdk6/hello" => (200, "hello from spin-sdk 6".to_owned()),
        "/sdk6/kv/set" => set(&query).await,
        "/sdk6/kv/get" => get(&query).await,
        "/sdk6/variable" => variable(&query).await,
        "/sdk6/outbound" => outbound(&query).await,
        other => (404, format!("no route {other}")),
    };
    http::Response::builder().status(status).body(body)
}

async fn set(query: &str) -> Reply {
    let Some((key, value)) = query.split_once('=') else {
        return (400, "expected ?<key>=<value>".to_owned());
    };
    let stored = async { Store::open_default().await?.set(key, value).await };
    match stored.await {
        Ok(()) => (200, "stored".to_owned()),
        Err(error) => (500, format!("{error:?}")),
    }
}

async fn get(key: &str) -> Reply {
    let found = async { Store::open_default().await?.get(key).await };
    match found.await {
        Ok(Some(value)) => (200, String::from_utf8_lossy(&value).into_owned()),
        Ok(None) => (404, format!("no key {key}")),
        Err(error) => (500, format!("{error:?}")),
    }
}

async fn variable(name: &str) -> Reply {
    match spin_sdk::variables::get(name).await {
        Ok(value) => (200, value),
        Err(error) => (500, format!("{error:?}")),
    }
}

async fn outbound(url: &str) -> Reply {
    match spin_sdk::http::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().bytes().await {
                Ok(body) => (200, format!("{status}\n{}", String::from_utf8_lossy(&body))),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        Err(error) => (500, format!("{error:?}")),
    }
}
