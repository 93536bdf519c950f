//! `payments`: accounts and a simulated card gateway.
//!
//! - On `user.created` it opens an account with `credit_limit_cents`.
//! - Commands on `payments.charge` and `payments.refund` (requests from the
//!   saga). The gateway declines a charge that would take the account over
//!   its credit limit. Each command is idempotent per order.
//! - `GET /payments/account` (signed in) shows the caller's account.

use demo_kit::api::{self, ApiError, Reply};
use demo_kit::events::{self, Charge, CommandReply, USER_CREATED, Undo, UserEvent};
use demo_kit::token::authenticate;
use demo_kit::{db, now_ms, variable_number};
use serde::Serialize;
use spin_sdk::http::{Method, Request, StatusCode};
use spin_sdk::http_service;
use spindle_sdk::messaging;
use spindle_sdk::sql::{self, Error as SqlError, Transaction, Value};

spindle_sdk::message_handler_bindings!();

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

struct Gateway;

impl Guest for Gateway {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        if message.subject == USER_CREATED {
            let user: UserEvent = decode(&message)?;
            return open_account(&user.user_id)
                .await
                .map_err(retry("opening an account"));
        }
        let reply_to = message
            .reply_to
            .clone()
            .ok_or_else(|| HandlerError::Reject("a command needs a reply subject".into()))?;
        let answer = match message.subject.as_str() {
            events::PAYMENTS_CHARGE => charge(&decode(&message)?).await,
            events::PAYMENTS_REFUND => refund(&decode::<Undo>(&message)?.order_id).await,
            other => {
                return Err(HandlerError::Reject(format!(
                    "payments does not handle {other}"
                )));
            }
        }
        .map_err(retry(&message.subject))?;
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        messaging::publish(reply_to, body, Vec::new())
            .await
            .map_err(retry("replying"))
    }
}

export!(Gateway);

fn retry<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> HandlerError + '_ {
    move |error| {
        eprintln!("payments: {what}: {error:?}");
        HandlerError::Retry(200)
    }
}

fn decode<T: serde::de::DeserializeOwned>(message: &Message) -> Result<T, HandlerError> {
    serde_json::from_slice(&message.body).map_err(|error| {
        HandlerError::Reject(format!("not a {} message: {error}", message.subject))
    })
}

async fn open_account(user_id: &str) -> Result<(), SqlError> {
    let limit = variable_number("credit_limit_cents", 100_000).await as i64;
    sql::execute(
        "INSERT INTO accounts (user_id, credit_limit_cents, charged_cents, created_at) \
         VALUES ($1, $2, 0, $3) ON CONFLICT (user_id) DO NOTHING"
            .into(),
        vec![
            db::text(user_id),
            Value::Integer(limit),
            Value::Integer(now_ms()),
        ],
    )
    .await?;
    Ok(())
}

/// Charges the order's amount unless that would pass the credit limit.
async fn charge(command: &Charge) -> Result<CommandReply, SqlError> {
    if let Some(answer) = earlier_answer(&command.order_id).await? {
        return Ok(answer);
    }
    let tx = Transaction::begin().await?;
    let accounts = tx
        .query(
            "SELECT credit_limit_cents, charged_cents FROM accounts WHERE user_id = $1".into(),
            vec![db::text(&command.user_id)],
        )
        .await?;
    let Some(account) = db::first(&accounts) else {
        tx.rollback().await?;
        return Ok(CommandReply::NotYet {
            reason: "the account is not open yet".into(),
        });
    };
    let room = account.integer("credit_limit_cents") - account.integer("charged_cents");
    let charged = tx
        .execute(
            "UPDATE accounts SET charged_cents = charged_cents + $2 \
             WHERE user_id = $1 AND charged_cents + $2 <= credit_limit_cents"
                .into(),
            vec![
                db::text(&command.user_id),
                Value::Integer(command.amount_cents),
            ],
        )
        .await?;
    let (status, reason) = if charged == 1 {
        ("charged", None)
    } else {
        let reason = format!(
            "payment declined: {} cents is over the {} cents left on the credit limit",
            command.amount_cents,
            room.max(0)
        );
        ("declined", Some(reason))
    };
    let row = ChargeRow {
        order_id: &command.order_id,
        user_id: &command.user_id,
        amount: command.amount_cents,
        status,
        reason: reason.as_deref(),
    };
    match row.insert(&tx).await {
        Ok(()) => {
            tx.commit().await?;
            return Ok(match reason {
                None => CommandReply::Done {
                    amount_cents: command.amount_cents,
                },
                Some(reason) => CommandReply::Refused { reason },
            });
        }
        // A redelivered copy of this command got there first: its answer
        // is the one that stands.
        Err(SqlError::ConstraintViolation(_)) => tx.rollback().await?,
        Err(error) => return Err(error),
    }
    Ok(earlier_answer(&command.order_id)
        .await?
        .unwrap_or(CommandReply::NotYet {
            reason: "the charge is being written".into(),
        }))
}

/// Gives a charge back; repeated, or before any charge, does nothing more.
async fn refund(order_id: &str) -> Result<CommandReply, SqlError> {
    let tx = Transaction::begin().await?;
    let rows = tx
        .query(
            "SELECT user_id, amount_cents, status FROM charges WHERE order_id = $1".into(),
            vec![db::text(order_id)],
        )
        .await?;
    match db::first(&rows) {
        Some(row) if row.text("status") == "charged" => {
            tx.execute(
                "UPDATE accounts SET charged_cents = charged_cents - $2 WHERE user_id = $1".into(),
                vec![
                    db::text(row.text("user_id")),
                    Value::Integer(row.integer("amount_cents")),
                ],
            )
            .await?;
            tx.execute(
                "UPDATE charges SET status = 'refunded', updated_at = $2 WHERE order_id = $1"
                    .into(),
                vec![db::text(order_id), Value::Integer(now_ms())],
            )
            .await?;
        }
        Some(_) => {}
        None => {
            let tombstone = ChargeRow {
                order_id,
                user_id: "",
                amount: 0,
                status: "voided",
                reason: Some("refunded before charged"),
            };
            tombstone.insert(&tx).await?;
        }
    }
    tx.commit().await?;
    Ok(CommandReply::Done { amount_cents: 0 })
}

/// The answer a charge for this order already got, if any.
async fn earlier_answer(order_id: &str) -> Result<Option<CommandReply>, SqlError> {
    let rows = sql::query(
        "SELECT amount_cents, status, reason FROM charges WHERE order_id = $1".into(),
        vec![db::text(order_id)],
    )
    .await?;
    Ok(
        db::first(&rows).map(|row| match row.text("status").as_str() {
            "charged" => CommandReply::Done {
                amount_cents: row.integer("amount_cents"),
            },
            "declined" => CommandReply::Refused {
                reason: row.text("reason"),
            },
            _ => CommandReply::Refused {
                reason: "the order was refunded".into(),
            },
        }),
    )
}

struct ChargeRow<'a> {
    order_id: &'a str,
    user_id: &'a str,
    amount: i64,
    status: &'a str,
    reason: Option<&'a str>,
}

impl ChargeRow<'_> {
    async fn insert(&self, tx: &Transaction) -> Result<(), SqlError> {
        tx.execute(
            "INSERT INTO charges (order_id, user_id, amount_cents, status, reason, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
                .into(),
            vec![
                db::text(self.order_id),
                db::text(self.user_id),
                Value::Integer(self.amount),
                db::text(self.status),
                self.reason.map_or(Value::Null, db::text),
                Value::Integer(now_ms()),
            ],
        )
        .await
        .map(drop)
    }
}

#[derive(Serialize)]
struct Account {
    user_id: String,
    credit_limit_cents: i64,
    charged_cents: i64,
    available_cents: i64,
}

#[http_service]
async fn serve(request: Request) -> Reply {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let result = match (request.method().clone(), path.as_str()) {
        (Method::GET, "/payments/account") => account(&request).await,
        (_, "/payments/account") => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    };
    result.unwrap_or_else(ApiError::into_reply)
}

async fn account(request: &Request) -> Result<Reply, ApiError> {
    let claims = authenticate(request).await?;
    let rows = sql::query(
        "SELECT user_id, credit_limit_cents, charged_cents FROM accounts WHERE user_id = $1".into(),
        vec![db::text(&claims.sub)],
    )
    .await?;
    let row = db::first(&rows)
        .ok_or_else(|| ApiError::not_found("the account is not open yet; try again shortly"))?;
    let (limit, charged) = (
        row.integer("credit_limit_cents"),
        row.integer("charged_cents"),
    );
    Ok(api::json(
        StatusCode::OK,
        &Account {
            user_id: row.text("user_id"),
            credit_limit_cents: limit,
            charged_cents: charged,
            available_cents: limit - charged,
        },
    ))
}
