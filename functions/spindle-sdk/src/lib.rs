//! Spindle's guest SDK: the `spindle:platform` interfaces, next to spin-sdk.
//!
//! - [`sql`]: the component's own managed database (queries, transactions,
//!   and the transactional outbox through [`sql::Transaction::publish`]).
//!
//! The bindings are generated from `wit/` at the workspace root, the same
//! files the host binds, so guest and host cannot drift apart.

wit_bindgen::generate!({
    path: "../../wit",
    world: "spindle:platform/service-imports",
    generate_all,
});

/// The component's managed database.
///
/// ```ignore
/// use spindle_sdk::sql::{self, Value};
/// let rows = sql::query("SELECT name FROM users WHERE id = $1", &[Value::Integer(7)]).await?;
/// let tx = sql::Transaction::begin().await?;
/// tx.execute("INSERT INTO orders (id) VALUES ($1)", &[Value::Text(id.clone())]).await?;
/// tx.publish("order.created", &body, &[]).await?;
/// tx.commit().await?;
/// ```
pub mod sql {
    pub use crate::spindle::platform::sql::*;
}
