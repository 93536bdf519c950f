//! Spindle's guest SDK: the `spindle:platform` interfaces, next to spin-sdk.
//!
//! - [`sql`]: the component's own managed database (queries, transactions,
//!   and the transactional outbox through [`sql::Transaction::publish`]).
//! - [`messaging`]: publish and request/reply on the app's message bus.
//! - [`types`]: the message record both share with the handler export.
//!
//! The bindings are generated from `wit/` at the workspace root, the same
//! files the host binds, so guest and host cannot drift apart.
//!
//! # Handling messages
//!
//! A `[[trigger.nats]]` component exports `spindle:platform/message-handler`.
//! Exports are generated in the component's own crate (a library cannot
//! declare an export for its users); [`message_handler_bindings!`] does it,
//! reusing this crate's imports:
//!
//! ```ignore
//! spindle_sdk::message_handler_bindings!();   // for a crate two levels below wit/
//! use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};
//! struct Handler;
//! impl Guest for Handler {
//!     async fn handle(message: Message) -> Result<(), HandlerError> { Ok(()) }
//! }
//! export!(Handler);
//! ```

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

/// Publishing and request/reply, to subjects the manifest allows
/// (`[component.<id>.tool.spindle] allowed_publish`).
///
/// ```ignore
/// spindle_sdk::messaging::publish("order.created".into(), body, vec![]).await?;
/// ```
pub mod messaging {
    pub use crate::spindle::platform::messaging::*;
}

/// The message record.
pub mod types {
    pub use crate::spindle::platform::types::*;
}

/// Generates the `spindle:platform/message-handler` export in the calling
/// crate, reusing this crate's imports. The argument is the path from the
/// crate's `Cargo.toml` to the workspace's `wit/` (default `"../../wit"`,
/// right for `functions/<name>`). The crate then implements
/// `exports::spindle::platform::message_handler::Guest` and calls
/// `export!(ItsHandler)`; it needs `wit-bindgen` as a dependency.
#[macro_export]
macro_rules! message_handler_bindings {
    () => {
        $crate::message_handler_bindings!("../../wit");
    };
    ($wit:literal) => {
        wit_bindgen::generate!({
            path: $wit,
            world: "spindle:platform/message-component",
            with: {
                "spindle:platform/sql@0.1.0": spindle_sdk::sql,
                "spindle:platform/types@0.1.0": spindle_sdk::types,
                "spindle:platform/messaging@0.1.0": spindle_sdk::messaging,
            },
        });
    };
}
