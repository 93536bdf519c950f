//! Test guest, both HTTP- and NATS-triggered, keeping what it handled in its
//! managed database so tests can check it over HTTP.
//!
//! Messages, by the last token of their subject:
//! - `echo`: answers the request on its reply subject with `echo: <body>`;
//! - `reject`: refuses it for good (dead-letter);
//! - `lines`: refuses it with a reason of two lines;
//! - `trap`: traps (a Rust panic) on every delivery;
//! - `flaky`: asks for a retry on its first two deliveries, then records it;
//! - `together`: waits 300 ms, then answers `<body> <n>` on its reply
//!   subject, `n` being the most `together` messages its instance ran at
//!   once;
//! - anything else: records it once per `spindle-message-id` (its own dedupe),
//!   with its trace context, the `replica` variable and any dead-letter reason.
//!
//! HTTP: `GET /slow` answers after 100 ms; `POST /publish/<subject>` publishes the body, `POST
//! /request/<subject>` sends it as a request and answers with the reply,
//! `GET /handled` lists what was recorded and counts deliveries and effects.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::{http_service, variables};
use spindle_sdk::messaging::{self, Error as MessagingError};
use spindle_sdk::sql::{self, Transaction, Value};

spindle_sdk::message_handler_bindings!("../../../wit");

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

struct Handler;

impl Guest for Handler {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let kind = message.subject.rsplit('.').next().unwrap_or_default();
        let body = String::from_utf8_lossy(&message.body).into_owned();
        bump("deliveries").await.map_err(retry)?;
        match kind {
            "echo" => {
                let reply_to = message
                    .reply_to
                    .ok_or_else(|| HandlerError::Reject("an echo needs a reply subject".into()))?;
                let reply = format!("echo: {body}").into_bytes();
                messaging::publish(reply_to, reply, Vec::new())
                    .await
                    .map_err(|error| HandlerError::Reject(format!("{error:?}")))
            }
            "together" => together(message.reply_to, &body).await,
            "reject" => Err(HandlerError::Reject(format!("cannot take {body}"))),
            "lines" => Err(HandlerError::Reject("first line\nsecond line".into())),
            "trap" => panic!("deliberate trap\nwith a second line"),
            "flaky" => {
                let attempts = count_attempt(&message_id(&message.headers, &body))
                    .await
                    .map_err(retry)?;
                if attempts < 3 {
                    return Err(HandlerError::Retry(50));
                }
                record(&message.subject, &message.headers, &body)
                    .await
                    .map_err(retry)
            }
            _ => record(&message.subject, &message.headers, &body)
                .await
                .map_err(retry),
        }
    }
}

export!(Handler);

/// `together` messages running in this instance now, and the most at once.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);

async fn together(reply_to: Option<String>, body: &str) -> Result<(), HandlerError> {
    let reply_to = reply_to.ok_or_else(|| HandlerError::Reject("needs a reply subject".into()))?;
    let running = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_AT_ONCE.fetch_max(running, Ordering::SeqCst);
    // Long enough for the messages sent with this one to arrive meanwhile.
    spin_sdk::time::sleep(std::time::Duration::from_millis(300)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    let reply = format!("{body} {}", MOST_AT_ONCE.load(Ordering::SeqCst));
    messaging::publish(reply_to, reply.into_bytes(), Vec::new())
        .await
        .map_err(|error| HandlerError::Reject(format!("{error:?}")))
}

fn retry(error: String) -> HandlerError {
    eprintln!("message-handler: {error}");
    HandlerError::Retry(100)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn message_id(headers: &[(String, String)], body: &str) -> String {
    header(headers, "spindle-message-id")
        .unwrap_or(body)
        .to_string()
}

/// Records the message unless its id was seen; the effect counter moves
/// only for the first delivery, in the same transaction.
async fn record(subject: &str, headers: &[(String, String)], body: &str) -> Result<(), String> {
    let id = message_id(headers, body);
    let replica = variables::get("replica").await.unwrap_or_default();
    let traceparent = header(headers, "traceparent").unwrap_or_default();
    let reason = header(headers, "spindle-dead-letter-reason").unwrap_or_default();
    let tx = Transaction::begin().await.map_err(|e| format!("{e:?}"))?;
    let inserted = tx
        .execute(
            "INSERT INTO handled (id, subject, body, traceparent, replica, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING"
                .into(),
            vec![
                Value::Text(id),
                Value::Text(subject.into()),
                Value::Text(body.into()),
                Value::Text(traceparent.into()),
                Value::Text(replica),
                Value::Text(reason.into()),
            ],
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
    if inserted == 1 {
        tx.execute(BUMP.into(), vec![Value::Text("effects".into())])
            .await
            .map_err(|e| format!("{e:?}"))?;
    }
    tx.commit().await.map_err(|e| format!("{e:?}"))
}

const BUMP: &str = "INSERT INTO counters (name, value) VALUES ($1, 1) \
                    ON CONFLICT (name) DO UPDATE SET value = counters.value + 1";

async fn bump(counter: &str) -> Result<(), String> {
    sql::execute(BUMP.into(), vec![Value::Text(counter.into())])
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

async fn count_attempt(id: &str) -> Result<i64, String> {
    sql::execute(
        "INSERT INTO attempts (id, count) VALUES ($1, 1) \
         ON CONFLICT (id) DO UPDATE SET count = attempts.count + 1"
            .into(),
        vec![Value::Text(id.into())],
    )
    .await
    .map_err(|e| format!("{e:?}"))?;
    let rows = sql::query(
        "SELECT count FROM attempts WHERE id = $1".into(),
        vec![Value::Text(id.into())],
    )
    .await
    .map_err(|e| format!("{e:?}"))?;
    match rows.rows.first().and_then(|row| row.first()) {
        Some(Value::Integer(count)) => Ok(*count),
        other => Err(format!("unexpected attempts row {other:?}")),
    }
}

#[http_service]
async fn serve(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_string();
    let is_get = req.method() == spin_sdk::http::Method::GET;
    let body = req
        .into_body()
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if let Some(subject) = path.strip_prefix("/publish/") {
        let headers = vec![("x-test".to_string(), "yes".to_string())];
        return match messaging::publish(subject.into(), body, headers).await {
            Ok(()) => (StatusCode::ACCEPTED, "published".to_string()),
            Err(error) => error_response(error),
        };
    }
    if let Some(subject) = path.strip_prefix("/request/") {
        return match messaging::request(subject.into(), body, 2000).await {
            Ok(reply) => (
                StatusCode::OK,
                String::from_utf8_lossy(&reply.body).into_owned(),
            ),
            Err(error) => error_response(error),
        };
    }
    if path == "/slow" {
        // Holds an admission slot for a while, as a slow HTTP call would.
        spin_sdk::time::sleep(std::time::Duration::from_millis(100)).await;
        return (StatusCode::OK, "slow".to_string());
    }
    if path == "/handled" && is_get {
        return match handled().await {
            Ok(listing) => (StatusCode::OK, listing),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error),
        };
    }
    (StatusCode::NOT_FOUND, "no such route".to_string())
}

fn error_response(error: MessagingError) -> (StatusCode, String) {
    let status = match &error {
        MessagingError::SubjectDenied(_) => StatusCode::FORBIDDEN,
        MessagingError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        MessagingError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        MessagingError::Other(_) => StatusCode::BAD_REQUEST,
    };
    (status, format!("{error:?}"))
}

/// `{"handled": [{id, subject, body, traceparent, replica, reason}], "deliveries": n, "effects": n}`.
async fn handled() -> Result<String, String> {
    // Counters first: every effect they count is then among the rows.
    let counters = sql::query("SELECT name, value FROM counters".into(), Vec::new())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let rows = sql::query(
        "SELECT id, subject, body, traceparent, replica, reason FROM handled ORDER BY subject, body"
            .into(),
        Vec::new(),
    )
    .await
    .map_err(|e| format!("{e:?}"))?;
    let text = |value: &Value| match value {
        Value::Text(text) => text.clone(),
        _ => String::new(),
    };
    let handled: Vec<_> = rows
        .rows
        .iter()
        .map(|row| {
            json!({
                "id": text(&row[0]),
                "subject": text(&row[1]),
                "body": text(&row[2]),
                "traceparent": text(&row[3]),
                "replica": text(&row[4]),
                "reason": text(&row[5]),
            })
        })
        .collect();
    let mut listing = json!({ "handled": handled, "deliveries": 0, "effects": 0 });
    for row in &counters.rows {
        if let (Value::Text(name), Value::Integer(value)) = (&row[0], &row[1]) {
            listing[name.as_str()] = json!(value);
        }
    }
    Ok(listing.to_string())
}
