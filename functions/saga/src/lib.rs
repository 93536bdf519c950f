//! `saga`: runs each order on `order.created`.
//!
//! Reserve the stock (`inventory.reserve`), charge the amount
//! (`payments.charge`), confirm (`order.confirmed`). When a step is refused,
//! or its service has not answered within `step_deadline_seconds` of the
//! start, the steps already taken are undone in reverse (`payments.refund`,
//! `inventory.release`) and the order is cancelled with the reason
//! (`order.cancelled`).
//!
//! The saga's state is stored before and after every command and the final
//! event goes out through the outbox with the last state change, so a host
//! killed anywhere resumes (or compensates) where it stopped when the event
//! is delivered again. Every command is idempotent per order, so repeating
//! one is safe.

use demo_kit::events::{
    self, Charge, CommandReply, Item, OrderCancelled, OrderConfirmed, OrderCreated, Reserve, Undo,
};
use demo_kit::{db, now_ms, variable_number};
use serde::Serialize;
use spindle_sdk::messaging;
use spindle_sdk::sql::{self, Error as SqlError, Transaction, Value};

spindle_sdk::message_handler_bindings!();

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

/// How long one command waits for its answer.
const COMMAND_TIMEOUT_MS: u32 = 5_000;
/// How soon a step that could not finish is tried again.
const RETRY_MS: u32 = 500;

struct OrderSaga;

impl Guest for OrderSaga {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let order: OrderCreated = serde_json::from_slice(&message.body).map_err(|error| {
            HandlerError::Reject(format!("not an order.created event: {error}"))
        })?;
        let mut saga = Saga::load_or_start(&order).await.map_err(stored_retry)?;
        let deadline_ms = variable_number("step_deadline_seconds", 30).await as i64 * 1000;
        saga.run(deadline_ms).await
    }
}

export!(OrderSaga);

/// Where a saga stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reserving,
    Charging,
    Confirming,
    Compensating,
    Confirmed,
    Cancelled,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Reserving => "reserving",
            State::Charging => "charging",
            State::Confirming => "confirming",
            State::Compensating => "compensating",
            State::Confirmed => "confirmed",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<State> {
        [
            State::Reserving,
            State::Charging,
            State::Confirming,
            State::Compensating,
            State::Confirmed,
            State::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// One order's saga, as stored.
struct Saga {
    order_id: String,
    user_id: String,
    items: Vec<Item>,
    state: State,
    amount_cents: i64,
    must_release: bool,
    must_refund: bool,
    reason: Option<String>,
    started_at: i64,
}

/// What a command's answer means for the saga.
enum Answer {
    Done(i64),
    Refused(String),
    /// No answer, or "not yet": try again later.
    Later(String),
}

impl Saga {
    /// The stored saga for this order, or a new one, stored: one statement
    /// either way (the no-op update makes `RETURNING` give the stored row).
    async fn load_or_start(order: &OrderCreated) -> Result<Saga, SqlError> {
        let now = now_ms();
        // Reserving starts with `must_release`: the reservation may land
        // even if its answer never comes back.
        let rows = sql::query(
            "INSERT INTO sagas (order_id, user_id, items, state, must_release, started_at, updated_at) \
             VALUES ($1, $2, $3, 'reserving', 1, $4, $4) \
             ON CONFLICT (order_id) DO UPDATE SET order_id = excluded.order_id \
             RETURNING order_id, user_id, items, state, amount_cents, must_release, must_refund, \
             reason, started_at"
                .into(),
            vec![
                db::text(&order.order_id),
                db::text(&order.user_id),
                db::text(serde_json::to_string(&order.items).unwrap_or_default()),
                Value::Integer(now),
            ],
        )
        .await?;
        let row =
            db::first(&rows).ok_or_else(|| SqlError::Other("the saga row vanished".into()))?;
        let state = row.text("state");
        Ok(Saga {
            order_id: row.text("order_id"),
            user_id: row.text("user_id"),
            items: serde_json::from_str(&row.text("items")).unwrap_or_default(),
            state: State::parse(&state)
                .ok_or_else(|| SqlError::Other(format!("unknown saga state {state}")))?,
            amount_cents: row.integer("amount_cents"),
            must_release: row.integer("must_release") == 1,
            must_refund: row.integer("must_refund") == 1,
            reason: row.optional_text("reason"),
            started_at: row.integer("started_at"),
        })
    }

    /// Runs the saga from where it stands to confirmed or cancelled.
    async fn run(&mut self, deadline_ms: i64) -> Result<(), HandlerError> {
        loop {
            match self.state {
                State::Reserving => {
                    let command = Reserve {
                        order_id: self.order_id.clone(),
                        items: self.items.clone(),
                    };
                    match send(events::INVENTORY_RESERVE, &command).await {
                        Answer::Done(amount) => {
                            self.amount_cents = amount;
                            self.must_refund = true;
                            self.state = State::Charging;
                        }
                        Answer::Refused(reason) => {
                            self.must_release = false;
                            self.compensate(reason);
                        }
                        Answer::Later(why) => self.wait_or_give_up(&why, deadline_ms)?,
                    }
                }
                State::Charging => {
                    let command = Charge {
                        order_id: self.order_id.clone(),
                        user_id: self.user_id.clone(),
                        amount_cents: self.amount_cents,
                    };
                    match send(events::PAYMENTS_CHARGE, &command).await {
                        // Straight on: the outcome and its event are stored
                        // together, and a redelivery before that charges
                        // again, which is idempotent.
                        Answer::Done(_) => return self.finish(State::Confirmed).await,
                        Answer::Refused(reason) => {
                            self.must_refund = false;
                            self.compensate(reason);
                        }
                        Answer::Later(why) => self.wait_or_give_up(&why, deadline_ms)?,
                    }
                }
                State::Compensating => {
                    // Undo in reverse: the charge, then the reservation.
                    // Compensation has no deadline: it must finish.
                    if self.must_refund {
                        self.undo(events::PAYMENTS_REFUND).await?;
                        self.must_refund = false;
                    } else if self.must_release {
                        self.undo(events::INVENTORY_RELEASE).await?;
                        self.must_release = false;
                    } else {
                        return self.finish(State::Cancelled).await;
                    }
                }
                // Stored by earlier versions, which saved this step.
                State::Confirming => return self.finish(State::Confirmed).await,
                State::Confirmed | State::Cancelled => return Ok(()),
            }
            self.save().await.map_err(stored_retry)?;
        }
    }

    fn compensate(&mut self, reason: String) {
        self.reason = Some(reason);
        self.state = State::Compensating;
    }

    /// Asks for a redelivery, unless the saga has waited long enough: then
    /// it compensates.
    fn wait_or_give_up(&mut self, why: &str, deadline_ms: i64) -> Result<(), HandlerError> {
        if now_ms() - self.started_at < deadline_ms {
            eprintln!(
                "saga {}: {} waits: {why}",
                self.order_id,
                self.state.as_str()
            );
            return Err(HandlerError::Retry(RETRY_MS));
        }
        let step = match self.state {
            State::Reserving => "inventory",
            _ => "payments",
        };
        self.compensate(format!("{step} did not answer in time: {why}"));
        Ok(())
    }

    async fn undo(&self, subject: &str) -> Result<(), HandlerError> {
        let command = Undo {
            order_id: self.order_id.clone(),
        };
        match send(subject, &command).await {
            Answer::Done(_) => Ok(()),
            Answer::Refused(why) | Answer::Later(why) => {
                eprintln!("saga {}: {subject} must be retried: {why}", self.order_id);
                Err(HandlerError::Retry(RETRY_MS))
            }
        }
    }

    /// Stores a step: one statement, no transaction around it.
    async fn save(&self) -> Result<(), SqlError> {
        sql::execute(UPDATE_SAGA.into(), self.columns()).await?;
        Ok(())
    }

    /// Stores the final state and its event in one transaction.
    async fn finish(&mut self, state: State) -> Result<(), HandlerError> {
        self.state = state;
        let event = match state {
            State::Confirmed => (
                events::ORDER_CONFIRMED,
                to_json(&OrderConfirmed {
                    order_id: self.order_id.clone(),
                    amount_cents: self.amount_cents,
                }),
            ),
            _ => (
                events::ORDER_CANCELLED,
                to_json(&OrderCancelled {
                    order_id: self.order_id.clone(),
                    reason: self.reason.clone().unwrap_or_default(),
                }),
            ),
        };
        self.write(event).await.map_err(stored_retry)
    }

    /// Stores the state and its event in one transaction.
    async fn write(&self, (subject, body): (&str, Vec<u8>)) -> Result<(), SqlError> {
        let tx = Transaction::begin().await?;
        tx.execute(UPDATE_SAGA.into(), self.columns()).await?;
        tx.publish(subject.into(), body, Vec::new()).await?;
        tx.commit().await
    }

    /// The parameters of [`UPDATE_SAGA`].
    fn columns(&self) -> Vec<Value> {
        vec![
            db::text(&self.order_id),
            db::text(self.state.as_str()),
            Value::Integer(self.amount_cents),
            Value::Integer(self.must_release.into()),
            Value::Integer(self.must_refund.into()),
            self.reason.clone().map_or(Value::Null, Value::Text),
            Value::Integer(now_ms()),
        ]
    }
}

/// Stores where a saga stands.
const UPDATE_SAGA: &str = "UPDATE sagas SET state = $2, amount_cents = $3, must_release = $4, \
     must_refund = $5, reason = $6, updated_at = $7 WHERE order_id = $1";

/// Sends a command and reads its answer.
async fn send(subject: &str, command: &impl Serialize) -> Answer {
    let reply = match messaging::request(subject.into(), to_json(command), COMMAND_TIMEOUT_MS).await
    {
        Ok(reply) => reply,
        Err(error) => return Answer::Later(format!("{subject}: {error:?}")),
    };
    match serde_json::from_slice(&reply.body) {
        Ok(CommandReply::Done { amount_cents }) => Answer::Done(amount_cents),
        Ok(CommandReply::Refused { reason }) => Answer::Refused(reason),
        Ok(CommandReply::NotYet { reason }) => Answer::Later(reason),
        Err(error) => Answer::Later(format!("{subject}: unreadable answer: {error}")),
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn stored_retry(error: SqlError) -> HandlerError {
    eprintln!("saga: storing state: {error:?}");
    HandlerError::Retry(RETRY_MS)
}
