//! `inventory`: stock per SKU.
//!
//! - `GET /inventory` lists the catalogue; `GET /inventory/{sku}` shows one.
//! - Commands on `inventory.reserve` and `inventory.release` (requests from
//!   the saga) reserve an order's items, all or none, and release them. Each
//!   is idempotent per order: the reservation row remembers the answer, and
//!   a release that comes first leaves a tombstone so a late reserve is
//!   refused.

use demo_kit::api::{self, ApiError, Reply};
use demo_kit::events::{self, CommandReply, Item, Reserve, Undo};
use demo_kit::{db, now_ms};
use serde::Serialize;
use spin_sdk::http::{Method, Request, StatusCode};
use spin_sdk::http_service;
use spindle_sdk::messaging;
use spindle_sdk::sql::{self, Error as SqlError, Transaction, Value};

spindle_sdk::message_handler_bindings!();

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

struct Commands;

impl Guest for Commands {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let reply_to = message
            .reply_to
            .clone()
            .ok_or_else(|| HandlerError::Reject("a command needs a reply subject".into()))?;
        let answer = match message.subject.as_str() {
            events::INVENTORY_RESERVE => reserve(&decode(&message)?).await,
            events::INVENTORY_RELEASE => release(&decode::<Undo>(&message)?.order_id).await,
            other => {
                return Err(HandlerError::Reject(format!(
                    "inventory does not handle {other}"
                )));
            }
        };
        let answer = answer.map_err(|error| {
            eprintln!("inventory: {}: {error:?}", message.subject);
            HandlerError::Retry(200)
        })?;
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        messaging::publish(reply_to, body, Vec::new())
            .await
            .map_err(|error| {
                eprintln!("inventory: replying: {error:?}");
                HandlerError::Retry(200)
            })
    }
}

export!(Commands);

fn decode<T: serde::de::DeserializeOwned>(message: &Message) -> Result<T, HandlerError> {
    serde_json::from_slice(&message.body).map_err(|error| {
        HandlerError::Reject(format!("not a {} command: {error}", message.subject))
    })
}

/// Reserves every item or none; repeated, gives the first answer.
async fn reserve(command: &Reserve) -> Result<CommandReply, SqlError> {
    if let Some(answer) = earlier_answer(&command.order_id).await? {
        return Ok(answer);
    }
    let tx = Transaction::begin().await?;
    let mut amount = 0;
    for item in &command.items {
        match take(&tx, item).await? {
            Ok(price) => amount += price * item.quantity,
            Err(reason) => {
                tx.rollback().await?;
                return remember(&command.order_id, "refused", &[], 0, Some(&reason)).await;
            }
        }
    }
    match write_reservation(
        &tx,
        &command.order_id,
        "reserved",
        &command.items,
        amount,
        None,
    )
    .await
    {
        Ok(()) => {
            tx.commit().await?;
            Ok(CommandReply::Done {
                amount_cents: amount,
            })
        }
        // A redelivered copy of this command got there first.
        Err(SqlError::ConstraintViolation(_)) => {
            tx.rollback().await?;
            Ok(earlier_answer(&command.order_id)
                .await?
                .unwrap_or(CommandReply::NotYet {
                    reason: "the reservation is being written".into(),
                }))
        }
        Err(error) => Err(error),
    }
}

/// Takes `item` out of stock; `Err(reason)` when it cannot.
///
/// Every order of one product updates the same row, so the time its lock is
/// held bounds the product's orders per second: one statement takes the
/// stock and reads the price, and only a refusal reads the row again.
async fn take(tx: &Transaction, item: &Item) -> Result<Result<i64, String>, SqlError> {
    let taken = tx
        .query(
            "UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2 \
             RETURNING price_cents"
                .into(),
            vec![db::text(&item.sku), Value::Integer(item.quantity)],
        )
        .await?;
    if let Some(row) = db::first(&taken) {
        return Ok(Ok(row.integer("price_cents")));
    }
    let rows = tx
        .query(
            "SELECT available FROM stock WHERE sku = $1".into(),
            vec![db::text(&item.sku)],
        )
        .await?;
    Ok(Err(match db::first(&rows) {
        None => format!("unknown SKU {}", item.sku),
        Some(row) => format!(
            "not enough {} in stock ({} left, {} wanted)",
            item.sku,
            row.integer("available"),
            item.quantity
        ),
    }))
}

/// Puts a reservation's items back; repeated, does nothing more.
async fn release(order_id: &str) -> Result<CommandReply, SqlError> {
    let tx = Transaction::begin().await?;
    let rows = tx
        .query(
            "SELECT status, items FROM reservations WHERE order_id = $1".into(),
            vec![db::text(order_id)],
        )
        .await?;
    match db::first(&rows) {
        Some(row) if row.text("status") == "reserved" => {
            let items: Vec<Item> = serde_json::from_str(&row.text("items")).unwrap_or_default();
            for item in &items {
                tx.execute(
                    "UPDATE stock SET available = available + $2 WHERE sku = $1".into(),
                    vec![db::text(&item.sku), Value::Integer(item.quantity)],
                )
                .await?;
            }
            tx.execute(
                "UPDATE reservations SET status = 'released', updated_at = $2 WHERE order_id = $1"
                    .into(),
                vec![db::text(order_id), Value::Integer(now_ms())],
            )
            .await?;
        }
        Some(_) => {}
        None => {
            write_reservation(
                &tx,
                order_id,
                "released",
                &[],
                0,
                Some("released before reserved"),
            )
            .await?
        }
    }
    tx.commit().await?;
    Ok(CommandReply::Done { amount_cents: 0 })
}

/// The answer a reserve for this order already got, if any.
async fn earlier_answer(order_id: &str) -> Result<Option<CommandReply>, SqlError> {
    let rows = sql::query(
        "SELECT status, amount_cents, reason FROM reservations WHERE order_id = $1".into(),
        vec![db::text(order_id)],
    )
    .await?;
    Ok(
        db::first(&rows).map(|row| match row.text("status").as_str() {
            "reserved" => CommandReply::Done {
                amount_cents: row.integer("amount_cents"),
            },
            _ => CommandReply::Refused {
                reason: row
                    .optional_text("reason")
                    .unwrap_or_else(|| "released".into()),
            },
        }),
    )
}

/// Stores a refusal on its own and answers with it (or with what a
/// concurrent copy stored first).
async fn remember(
    order_id: &str,
    status: &str,
    items: &[Item],
    amount: i64,
    reason: Option<&str>,
) -> Result<CommandReply, SqlError> {
    let tx = Transaction::begin().await?;
    match write_reservation(&tx, order_id, status, items, amount, reason).await {
        Ok(()) => tx.commit().await?,
        Err(SqlError::ConstraintViolation(_)) => tx.rollback().await?,
        Err(error) => return Err(error),
    }
    Ok(earlier_answer(order_id)
        .await?
        .unwrap_or(CommandReply::NotYet {
            reason: "the reservation is being written".into(),
        }))
}

async fn write_reservation(
    tx: &Transaction,
    order_id: &str,
    status: &str,
    items: &[Item],
    amount: i64,
    reason: Option<&str>,
) -> Result<(), SqlError> {
    tx.execute(
        "INSERT INTO reservations (order_id, status, items, amount_cents, reason, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)"
            .into(),
        vec![
            db::text(order_id),
            db::text(status),
            db::text(serde_json::to_string(items).unwrap_or_default()),
            Value::Integer(amount),
            reason.map_or(Value::Null, db::text),
            Value::Integer(now_ms()),
        ],
    )
    .await
    .map(drop)
}

#[derive(Serialize)]
struct StockLevel {
    sku: String,
    name: String,
    price_cents: i64,
    available: i64,
}

#[http_service]
async fn serve(request: Request) -> Reply {
    let rest = api::path_after(&request, "/inventory")
        .unwrap_or_default()
        .to_string();
    let result = match (request.method().clone(), rest.as_str()) {
        (Method::GET, "") => catalogue().await,
        (method, sku) if sku.starts_with('/') && !sku[1..].contains('/') => match method {
            Method::GET => stock_level(&sku[1..]).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        (_, "") => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    };
    result.unwrap_or_else(ApiError::into_reply)
}

async fn catalogue() -> Result<Reply, ApiError> {
    let rows = sql::query(
        "SELECT sku, name, price_cents, available FROM stock ORDER BY sku".into(),
        Vec::new(),
    )
    .await?;
    let levels: Vec<StockLevel> = db::rows(&rows).map(|row| to_level(&row)).collect();
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({ "items": levels }),
    ))
}

async fn stock_level(sku: &str) -> Result<Reply, ApiError> {
    let rows = sql::query(
        "SELECT sku, name, price_cents, available FROM stock WHERE sku = $1".into(),
        vec![db::text(sku)],
    )
    .await?;
    let level = db::first(&rows).ok_or_else(|| ApiError::not_found(format!("no SKU {sku}")))?;
    Ok(api::json(StatusCode::OK, &to_level(&level)))
}

fn to_level(row: &db::Row<'_>) -> StockLevel {
    StockLevel {
        sku: row.text("sku"),
        name: row.text("name"),
        price_cents: row.integer("price_cents"),
        available: row.integer("available"),
    }
}
