//! `orders`: placing orders and following them.
//!
//! - `POST /orders` `{items: [{sku, quantity}]}` (signed in) fetches the
//!   customer's profile from `users` over gRPC (`GetUser`, through service
//!   chaining), then stores a pending order with the customer's name and
//!   email and publishes `order.created` in one transaction. With an
//!   `Idempotency-Key` header, repeating the request returns the first
//!   order instead of placing another.
//! - `GET /orders/{id}` (its owner only) shows the status and, once
//!   cancelled, why.
//! - On `order.confirmed` and `order.cancelled` (from the saga) it settles
//!   the order, once.

use demo_kit::api::{self, ApiError, Reply};
use demo_kit::events::{self, Item, ORDER_CREATED, OrderCancelled, OrderConfirmed, OrderCreated};
use demo_kit::grpc::{self, Code};
use demo_kit::proto::users::{GetUserRequest, GetUserResponse};
use demo_kit::token::authenticate;
use demo_kit::{db, now_ms};
use serde::{Deserialize, Serialize};
use spin_sdk::http::{HeaderValue, Method, Request, StatusCode};
use spin_sdk::http_service;
use spindle_sdk::sql::{self, Error as SqlError, Transaction, Value};

spindle_sdk::message_handler_bindings!();

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

/// Most lines an order may have, and most of one SKU per line.
const MAX_LINES: usize = 20;
const MAX_QUANTITY: i64 = 100;

/// The variable naming where `users` serves gRPC: `users.spin.internal`
/// (service chaining) when both run in one host, its Service elsewhere.
const USERS_ADDRESS: &str = "users_address";

struct Settlements;

impl Guest for Settlements {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let settled = match message.subject.as_str() {
            events::ORDER_CONFIRMED => {
                let event: OrderConfirmed = decode(&message)?;
                settle(
                    &event.order_id,
                    "confirmed",
                    Value::Integer(event.amount_cents),
                    Value::Null,
                )
                .await
            }
            events::ORDER_CANCELLED => {
                let event: OrderCancelled = decode(&message)?;
                settle(
                    &event.order_id,
                    "cancelled",
                    Value::Null,
                    Value::Text(event.reason),
                )
                .await
            }
            other => {
                return Err(HandlerError::Reject(format!(
                    "orders does not handle {other}"
                )));
            }
        };
        settled.map_err(|error| {
            eprintln!("orders: settling: {error:?}");
            HandlerError::Retry(500)
        })
    }
}

export!(Settlements);

fn decode<T: serde::de::DeserializeOwned>(message: &Message) -> Result<T, HandlerError> {
    serde_json::from_slice(&message.body)
        .map_err(|error| HandlerError::Reject(format!("not a {} event: {error}", message.subject)))
}

/// Moves a pending order to its final status; a repeated event changes nothing.
async fn settle(
    order_id: &str,
    status: &str,
    amount: Value,
    reason: Value,
) -> Result<(), SqlError> {
    sql::execute(
        "UPDATE orders SET status = $2, amount_cents = $3, reason = $4, updated_at = $5 \
         WHERE order_id = $1 AND status = 'pending'"
            .into(),
        vec![
            db::text(order_id),
            db::text(status),
            amount,
            reason,
            Value::Integer(now_ms()),
        ],
    )
    .await
    .map(drop)
}

#[http_service]
async fn serve(request: Request) -> Reply {
    let id = api::path_after(&request, "/orders")
        .unwrap_or_default()
        .to_string();
    let result = match (request.method().clone(), id.as_str()) {
        (Method::POST, "") => place(request).await,
        (method, id) if id.starts_with('/') && !id[1..].contains('/') => match method {
            Method::GET => show(&request, &id[1..]).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        (_, "") => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    };
    result.unwrap_or_else(ApiError::into_reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    #[serde(deserialize_with = "new_items")]
    items: Vec<Item>,
}

/// A line of a new order as documented: `sku` and `quantity`, nothing else
/// (the events' `Item` lets fields it does not know pass).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    sku: String,
    quantity: i64,
}

fn new_items<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Item>, D::Error> {
    let items: Vec<NewItem> = Deserialize::deserialize(deserializer)?;
    Ok(items
        .into_iter()
        .map(|NewItem { sku, quantity }| Item { sku, quantity })
        .collect())
}

/// Who an order is for, from their profile when it was placed.
#[derive(Serialize)]
struct Customer {
    name: String,
    email: String,
}

#[derive(Serialize)]
struct Order {
    order_id: String,
    user_id: String,
    /// `None` for orders placed before customers were recorded.
    customer: Option<Customer>,
    status: String,
    items: Vec<Item>,
    amount_cents: Option<i64>,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

async fn place(request: Request) -> Result<Reply, ApiError> {
    let claims = authenticate(&request).await?;
    let key = idempotency_key(&request)?;
    let authorization = request.headers().get("authorization").cloned();
    let mut order: NewOrder = api::read_json(request).await?;
    check_items(&order.items)?;
    // The same lines in another order are the same request.
    order.items.sort_by(|a, b| a.sku.cmp(&b.sku));
    let fingerprint = serde_json::to_string(&order.items).unwrap_or_default();

    if let Some(key) = &key
        && let Some(earlier) = replay(&claims.sub, key, &fingerprint).await?
    {
        return Ok(earlier);
    }
    let customer = customer(&claims.sub, authorization.as_ref()).await?;
    let order_id = uuid::Uuid::new_v4().to_string();
    match store(
        &order_id,
        &claims.sub,
        &customer,
        &order.items,
        key.as_deref(),
        &fingerprint,
    )
    .await
    {
        Ok(()) => {}
        // The same key won a race a moment ago: answer as its replay.
        Err(SqlError::ConstraintViolation(_)) if key.is_some() => {
            let key = key.as_deref().unwrap_or_default();
            return replay(&claims.sub, key, &fingerprint)
                .await?
                .ok_or_else(|| ApiError::unavailable("the order is being placed; try again"));
        }
        Err(error) => return Err(error.into()),
    }
    // Answer from what was stored rather than read it back: once committed,
    // the order must not be reported as failed.
    let now = now_ms();
    let order = Order {
        order_id,
        user_id: claims.sub,
        customer: Some(customer),
        status: "pending".into(),
        items: order.items,
        amount_cents: None,
        reason: None,
        created_at: now,
        updated_at: now,
    };
    Ok(created(&order, false))
}

/// The caller's profile, asked of `users` with the caller's own token.
async fn customer(
    user_id: &str,
    authorization: Option<&HeaderValue>,
) -> Result<Customer, ApiError> {
    let address = spin_sdk::variables::get(USERS_ADDRESS)
        .await
        .map_err(|error| ApiError::misconfigured(format!("{USERS_ADDRESS}: {error:?}")))?;
    let url = format!("http://{address}/spindle.demo.users.v1.UserService/GetUser");
    let asked = GetUserRequest {
        user_id: user_id.to_string(),
    };
    let reply: GetUserResponse =
        grpc::call(&url, &asked, authorization)
            .await
            .map_err(|status| match status.code {
                // The profile is made from `user.registered` just after sign-up.
                Code::NotFound => ApiError::conflict(
                    "no_profile_yet",
                    "your profile is not ready yet; try again in a moment",
                ),
                Code::Unauthenticated => ApiError::unauthorized("invalid_token", status.message),
                _ => {
                    eprintln!("orders: GetUser: {status:?}");
                    ApiError::unavailable("the users service cannot be reached; try again")
                }
            })?;
    let Some(user) = reply.user else {
        eprintln!("orders: GetUser answered OK without a user");
        return Err(ApiError::unavailable(
            "the users service answered without a profile",
        ));
    };
    Ok(Customer {
        name: user.name,
        email: user.email,
    })
}

/// Inserts the order and its `order.created` event, or neither.
async fn store(
    order_id: &str,
    user_id: &str,
    customer: &Customer,
    items: &[Item],
    key: Option<&str>,
    fingerprint: &str,
) -> Result<(), SqlError> {
    let now = now_ms();
    let tx = Transaction::begin().await?;
    tx.execute(
        "INSERT INTO orders (order_id, user_id, customer_name, customer_email, status, items, \
         idempotency_key, request_fingerprint, created_at, updated_at) \
         VALUES ($1, $2, $7, $8, 'pending', $3, $4, $5, $6, $6)"
            .into(),
        vec![
            db::text(order_id),
            db::text(user_id),
            db::text(fingerprint),
            key.map_or(Value::Null, db::text),
            db::text(fingerprint),
            Value::Integer(now),
            db::text(&customer.name),
            db::text(&customer.email),
        ],
    )
    .await?;
    let event = OrderCreated {
        order_id: order_id.to_string(),
        user_id: user_id.to_string(),
        items: items.to_vec(),
    };
    let body = serde_json::to_vec(&event).unwrap_or_default();
    tx.publish(ORDER_CREATED.into(), body, Vec::new()).await?;
    tx.commit().await
}

/// The order an earlier request with this key placed, if any; a different
/// request reusing the key is refused.
async fn replay(user_id: &str, key: &str, fingerprint: &str) -> Result<Option<Reply>, ApiError> {
    let rows = sql::query(
        "SELECT order_id, request_fingerprint FROM orders \
         WHERE user_id = $1 AND idempotency_key = $2"
            .into(),
        vec![db::text(user_id), db::text(key)],
    )
    .await?;
    let Some(row) = db::first(&rows) else {
        return Ok(None);
    };
    if row.text("request_fingerprint") != fingerprint {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different order",
        ));
    }
    let order = load(&row.text("order_id")).await?;
    Ok(order.map(|order| created(&order, true)))
}

async fn show(request: &Request, order_id: &str) -> Result<Reply, ApiError> {
    let claims = authenticate(request).await?;
    match load(order_id).await? {
        // Someone else's order looks like no order at all.
        Some(order) if order.user_id == claims.sub => Ok(api::json(StatusCode::OK, &order)),
        _ => Err(ApiError::not_found("no such order")),
    }
}

async fn load(order_id: &str) -> Result<Option<Order>, ApiError> {
    let rows = sql::query(
        "SELECT order_id, user_id, customer_name, customer_email, status, items, amount_cents, \
         reason, created_at, updated_at FROM orders WHERE order_id = $1"
            .into(),
        vec![db::text(order_id)],
    )
    .await?;
    Ok(db::first(&rows).map(|row| Order {
        order_id: row.text("order_id"),
        user_id: row.text("user_id"),
        customer: row
            .optional_text("customer_name")
            .zip(row.optional_text("customer_email"))
            .map(|(name, email)| Customer { name, email }),
        status: row.text("status"),
        items: serde_json::from_str(&row.text("items")).unwrap_or_default(),
        amount_cents: row.optional_integer("amount_cents"),
        reason: row.optional_text("reason"),
        created_at: row.integer("created_at"),
        updated_at: row.integer("updated_at"),
    }))
}

fn created(order: &Order, replayed: bool) -> Reply {
    let mut reply = api::json(StatusCode::CREATED, order);
    let headers = reply.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.order_id)) {
        headers.insert("location", location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    reply
}

fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.trim().len()) => Ok(Some(key.trim().to_string())),
        _ => Err(ApiError::invalid(
            "Idempotency-Key must be 1 to 255 visible characters",
        )),
    }
}

fn check_items(items: &[Item]) -> Result<(), ApiError> {
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(ApiError::invalid(format!(
            "an order has 1 to {MAX_LINES} items"
        )));
    }
    for (index, item) in items.iter().enumerate() {
        let sku_ok = (1..=32).contains(&item.sku.len())
            && item
                .sku
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if !sku_ok {
            return Err(ApiError::invalid(format!(
                "items[{index}].sku must be 1 to 32 of A-Z, 0-9 and '-'"
            )));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(ApiError::invalid(format!(
                "items[{index}].quantity must be 1 to {MAX_QUANTITY}"
            )));
        }
        if items[..index].iter().any(|earlier| earlier.sku == item.sku) {
            return Err(ApiError::invalid(format!(
                "items[{index}].sku repeats {}",
                item.sku
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod proptests;
