//! Test guest: one `spin_sdk::key_value` operation per request, chosen by the
//! query string (`?store=default&op=set&key=k&value=v`). Answers 200 with the
//! result, or 500 with the interface error's Debug text, so tests see exactly
//! what a Spin component would.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::key_value::{Error, Store};

/// Runs the operation named by the query and reports its outcome.
#[http_service]
async fn handle(req: Request) -> Result<impl IntoResponse, http::Error> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let (status, body) = match run(&query).await {
        Ok(result) => (200, result),
        Err(error) => (500, format!("{error:?}")),
    };
    http::Response::builder().status(status).body(body)
}

async fn run(query: &str) -> Result<String, Error> {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
            .unwrap_or_default()
    };
    let store = match param("store").as_str() {
        "" | "default" => Store::open_default().await?,
        label => Store::open(label).await?,
    };
    let key = param("key");
    match param("op").as_str() {
        "open" => Ok("opened".into()),
        "set" => {
            store.set(&key, param("value").as_bytes()).await?;
            Ok("ok".into())
        }
        "get" => Ok(match store.get(&key).await? {
            Some(value) => String::from_utf8_lossy(&value).into_owned(),
            None => "<none>".into(),
        }),
        "exists" => Ok(store.exists(&key).await?.to_string()),
        "delete" => {
            store.delete(&key).await?;
            Ok("ok".into())
        }
        // Keys starting with `prefix`, sorted, comma-separated: read one at a
        // time from the stream, then the listing's result checked, as the
        // SDK's docs ask.
        "keys" => {
            let prefix = param("prefix");
            let mut keys = store.get_keys().await;
            let mut found = Vec::new();
            while let Some(key) = keys.next().await {
                if key.starts_with(&prefix) {
                    found.push(key);
                }
            }
            keys.result().await?;
            found.sort();
            Ok(found.join(","))
        }
        other => Err(Error::Other(format!("unknown op `{other}`"))),
    }
}
