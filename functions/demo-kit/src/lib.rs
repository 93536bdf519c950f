//! What the demo app's services share.
//!
//! - [`api`]: JSON error bodies and responses, reading JSON requests.
//! - [`grpc`]: gRPC framing and statuses around prost messages, served and
//!   called.
//! - [`proto`]: the services' gRPC messages, generated from `proto/`.
//! - [`token`]: issuing and checking the bearer tokens `auth` signs.
//! - [`events`]: the messages the services exchange, one type per subject.
//! - [`db`]: reading cells of [`spindle_sdk::sql`] rows.

pub mod api;
pub mod db;
pub mod events;
pub mod grpc;
pub mod proto;
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
