//! The {{name}} service: keeps items in its own managed database.
//!
//! - `POST` with a text body stores an item and, in the same transaction,
//!   queues the event `{{name}}.created` in the outbox: the host publishes it
//!   after the commit, at least once, so the row and its event never
//!   disagree. Answers `201` with the item as JSON.
//! - `GET` lists the items as JSON.

wit_bindgen::generate!({
    path: "wit",
    world: "spindle:platform/service-imports",
    generate_all,
});

use serde_json::json;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
use spin_sdk::http_service;
use spindle::platform::sql::{self, Transaction, Value};

/// Routes by method: `GET` lists, `POST` creates.
#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let method = req.method().clone();
    let outcome = match method {
        Method::GET => list().await.map(|items| (StatusCode::OK, items)),
        Method::POST => {
            let body = req.into_body().bytes().await.map(|b| b.to_vec());
            match body {
                Ok(body) => create(String::from_utf8_lossy(&body).into_owned())
                    .await
                    .map(|item| (StatusCode::CREATED, item)),
                Err(error) => Ok((StatusCode::BAD_REQUEST, format!("unreadable body: {error}"))),
            }
        }
        _ => Ok((StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n".to_string())),
    };
    outcome.unwrap_or_else(|error| (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:?}\n")))
}

/// Stores the item and queues its event, both or neither.
async fn create(text: String) -> Result<String, sql::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    let item = json!({ "id": id, "text": text, "created_at": created_at }).to_string();
    let tx = Transaction::begin().await?;
    tx.execute(
        "INSERT INTO items (id, text, created_at) VALUES ($1, $2, $3)".into(),
        vec![Value::Text(id), Value::Text(text), Value::Integer(created_at)],
    )
    .await?;
    tx.publish("{{name}}.created".into(), item.clone().into_bytes(), Vec::new())
        .await?;
    tx.commit().await?;
    Ok(item)
}

/// `[{"id", "text", "created_at"}, ...]`, oldest first.
async fn list() -> Result<String, sql::Error> {
    let rows = sql::query(
        "SELECT id, text, created_at FROM items ORDER BY created_at, id".into(),
        Vec::new(),
    )
    .await?;
    let items: Vec<_> = rows
        .rows
        .iter()
        .map(|row| {
            let text = |value: Option<&Value>| match value {
                Some(Value::Text(text)) => text.clone(),
                _ => String::new(),
            };
            let created_at = match row.get(2) {
                Some(Value::Integer(ms)) => *ms,
                _ => 0,
            };
            json!({ "id": text(row.first()), "text": text(row.get(1)), "created_at": created_at })
        })
        .collect();
    Ok(serde_json::Value::from(items).to_string())
}
