//! What the demo app's services share.
//!
//! - [`api`]: JSON error bodies and responses, reading JSON requests.
//! - [`token`]: issuing and checking the bearer tokens `auth` signs.
//! - [`events`]: the messages the services exchange, one type per subject.
//! - [`db`]: reading cells of [`spindle_sdk::sql`] rows.

pub mod api;
pub mod db;
pub mod events;
pub mod token;

/// Milliseconds since the Unix epoch, from the host's wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// A numeric variable, or `default` when it is unset or not a number.
pub async fn variable_number(name: &str, default: u64) -> u64 {
    spin_sdk::variables::get(name)
        .await
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default)
}

/// Generates the `spindle:platform/message-handler` export in a service's
/// crate (wit-bindgen exports cannot live in a library), reusing
/// `spindle-sdk`'s imports. The crate then implements
/// `exports::spindle::platform::message_handler::Guest` and calls
/// `export!(ItsHandler)`. Needs `wit-bindgen` and `spindle-sdk` as
/// dependencies and the crate in `functions/`.
#[macro_export]
macro_rules! message_handler_bindings {
    () => {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "spindle:platform/message-component",
            with: {
                "spindle:platform/sql@0.1.0": spindle_sdk::sql,
                "spindle:platform/types@0.1.0": spindle_sdk::types,
                "spindle:platform/messaging@0.1.0": spindle_sdk::messaging,
            },
        });
    };
}
