//! Host bindings of Spindle's own WIT package (`wit/platform.wit`,
//! `spindle:platform`), generated once for every user: the `sql` and
//! `messaging` capabilities implement its imports and the NATS trigger calls
//! its `message-handler` export.

#![allow(missing_docs)] // generated code

wasmtime::component::bindgen!({
    path: "../wit",
    world: "spindle:platform/message-component",
    imports: { default: trappable | tracing },
    exports: { default: async | store },
    with: {
        "spindle:platform/sql.transaction": crate::capabilities::sql::TransactionHandle,
    },
});

pub use exports::spindle::platform::message_handler::HandlerError;
pub use spindle::platform::types::Message;
pub use spindle::platform::{messaging, sql};
