//! The message bus: what the outbox relay and (later) the messaging
//! capability publish to and the NATS trigger consumes from.
//!
//! NATS when the runtime config has `[messaging] url`, an in-process bus
//! otherwise, so that `spindle up` needs no broker. Both are one `Bus` value;
//! callers never know which they hold.

mod in_process;
mod nats;

use std::time::Duration;

use bytes::Bytes;

use crate::manifest::MessagingConfig;
pub use in_process::InProcessBus;
pub use nats::NatsBus;

/// A message on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Where it is published.
    pub subject: String,
    /// The payload, opaque to the bus.
    pub body: Bytes,
    /// Header pairs in order (trace context, message id, the app's own).
    pub headers: Vec<(String, String)>,
}

/// Why the bus did not take a message; the caller may retry.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker is unreachable or did not confirm in time.
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
}

/// The app's message bus.
#[derive(Clone)]
pub enum Bus {
    /// Messages stay inside this process (embedded default, not durable).
    InProcess(InProcessBus),
    /// A NATS server.
    Nats(NatsBus),
}

/// How long a publish may wait for the broker before it counts as failed.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Bus {
    /// Connects to the configured broker, or makes the in-process bus.
    /// An unreachable NATS server does not stop start-up: the client keeps
    /// reconnecting and publishes fail (and are retried) meanwhile.
    pub async fn connect(config: Option<&MessagingConfig>) -> anyhow::Result<Self> {
        Ok(match config {
            Some(config) => Self::Nats(NatsBus::connect(&config.url).await?),
            None => Self::InProcess(InProcessBus::default()),
        })
    }

    /// Publishes `message`; returns once the bus has taken it.
    pub async fn publish(&self, message: Message) -> Result<(), PublishError> {
        match self {
            Self::InProcess(bus) => {
                bus.publish(message);
                Ok(())
            }
            Self::Nats(bus) => bus.publish(message).await,
        }
    }
}
