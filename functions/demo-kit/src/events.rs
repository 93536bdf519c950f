//! The messages the services exchange: one type per subject, JSON on the
//! wire. Events (`user.*`, `order.*`) are published through the outbox;
//! commands (`inventory.*`, `payments.*`) are requests that get a
//! [`CommandReply`].

use serde::{Deserialize, Serialize};

/// `user.registered`: `auth` stored new credentials.
pub const USER_REGISTERED: &str = "user.registered";
/// `user.created`: `users` created the profile.
pub const USER_CREATED: &str = "user.created";
/// `order.created`: `orders` stored a pending order.
pub const ORDER_CREATED: &str = "order.created";
/// `order.confirmed`: the saga reserved, charged and confirmed.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// `order.cancelled`: the saga gave up and undid what it had done.
pub const ORDER_CANCELLED: &str = "order.cancelled";
/// Command: reserve an order's items.
pub const INVENTORY_RESERVE: &str = "inventory.reserve";
/// Command: release an order's reservation.
pub const INVENTORY_RELEASE: &str = "inventory.release";
/// Command: charge an order's amount.
pub const PAYMENTS_CHARGE: &str = "payments.charge";
/// Command: refund an order's charge.
pub const PAYMENTS_REFUND: &str = "payments.refund";

/// A user, as `user.registered` and `user.created` carry it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserEvent {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: i64,
}

/// `order.created`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<Item>,
}

/// `order.confirmed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: String,
    pub amount_cents: i64,
}

/// `order.cancelled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

/// `inventory.reserve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserve {
    pub order_id: String,
    pub items: Vec<Item>,
}

/// `payments.charge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub order_id: String,
    pub user_id: String,
    pub amount_cents: i64,
}

/// `inventory.release` and `payments.refund`: undo what was done for an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Undo {
    pub order_id: String,
}

/// The answer to a command. Repeating a command for the same order gives
/// the same answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandReply {
    /// Done; for a reservation, what the items cost.
    Done { amount_cents: i64 },
    /// Refused for good (no stock, declined); the saga compensates.
    Refused { reason: String },
    /// Not possible yet (for example the account is not open); ask again later.
    NotYet { reason: String },
}
