//! The message bus: what the outbox relay and the messaging capability
//! publish to and the NATS trigger consumes from.
//!
//! NATS when the runtime config has `[messaging] url`, an in-process bus
//! otherwise, so that `spindle up` needs no broker. Both are one `Bus` value
//! with the same subject matching and queue-group semantics; callers never
//! know which they hold.

mod delivery;
mod headers;
mod in_process;
mod nats;
mod subject;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::manifest::MessagingConfig;
pub use delivery::{
    Delivery, MAX_LOCAL_REDELIVERIES, MAX_REDELIVERY_DELAY, RetryError, Subscription,
};
pub use headers::{InvalidHeader, check_header, check_headers, single_line};
pub use in_process::InProcessBus;
pub use nats::NatsBus;
pub use subject::{is_literal_subject, is_subject_pattern, subject_matches};

/// The header carrying each message's unique id; consumers dedupe on it.
pub const MESSAGE_ID_HEADER: &str = "spindle-message-id";

/// The W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// Where it is published.
    pub subject: String,
    /// The payload, opaque to the bus.
    pub body: Bytes,
    /// Header pairs in order (trace context, message id, the app's own).
    pub headers: Vec<(String, String)>,
    /// Where the answer to a request goes.
    pub reply_to: Option<String>,
}

impl Message {
    /// The first value of header `name` (case-insensitive, as in NATS).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Adds a `spindle-message-id` unless the message has one.
    pub fn ensure_message_id(&mut self) {
        if self.header(MESSAGE_ID_HEADER).is_none() {
            self.headers.push((
                MESSAGE_ID_HEADER.to_string(),
                uuid::Uuid::new_v4().to_string(),
            ));
        }
    }
}

/// Why the bus did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker is unreachable or did not confirm in time; the caller may
    /// retry.
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
    /// The message is larger than the broker takes; retrying cannot help.
    #[error("the message takes {size} bytes with its headers; the server takes at most {max}")]
    TooLarge {
        /// The message's size on the wire.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
}

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nobody answered within the timeout.
    #[error("no reply in time")]
    TimedOut,
    /// Nobody subscribes to the subject.
    #[error("nobody listens on `{0}`")]
    NoResponders(String),
    /// The broker is unreachable.
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
}

/// What a subscriber asks the bus for.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSpec {
    /// The subject, with `*` and `>` wildcards.
    pub subject: String,
    /// Subscribers in one group share the messages (each goes to one).
    pub queue_group: Option<String>,
    /// A JetStream durable consumer, on NATS; on the in-process bus the name
    /// only acts as a queue group.
    pub durable: Option<DurableSpec>,
}

/// A JetStream durable pull consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct DurableSpec {
    /// The consumer's name; replicas with the same name share its messages.
    pub name: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries of one message before the server gives up on it.
    pub max_deliver: u32,
    /// Messages fetched ahead of the handler, per subscriber.
    pub prefetch: usize,
}

/// The app's message bus.
#[derive(Clone)]
pub enum Bus {
    /// Messages stay inside this process (embedded default, not durable).
    InProcess(InProcessBus),
    /// A NATS server (shared: the client is one connection).
    Nats(Arc<NatsBus>),
}

/// How long a publish may wait for the broker before it counts as failed.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Bus {
    /// Connects to the configured broker, or makes the in-process bus.
    /// An unreachable NATS server does not stop start-up: the client keeps
    /// reconnecting and publishes fail (and are retried) meanwhile.
    pub async fn connect(config: Option<&MessagingConfig>) -> anyhow::Result<Self> {
        Ok(match config {
            Some(config) => Self::Nats(Arc::new(NatsBus::connect(&config.url).await?)),
            None => Self::InProcess(InProcessBus::default()),
        })
    }

    /// Publishes `message`; returns once the bus has taken it (on NATS, once
    /// JetStream stored it when a stream captures the subject).
    pub async fn publish(&self, message: Message) -> Result<(), PublishError> {
        match self {
            Self::InProcess(bus) => bus.publish(message).await,
            Self::Nats(bus) => bus.publish(message).await,
        }
    }

    /// Publishes `message` with a fresh reply subject and waits up to
    /// `timeout` for the first answer.
    pub async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        match self {
            Self::InProcess(bus) => bus.request(message, timeout).await,
            Self::Nats(bus) => bus.request(message, timeout).await,
        }
    }

    /// A readiness probe: NATS is connected (the client reconnects on its
    /// own; this reports where it stands). The in-process bus is always up.
    pub fn probe(&self) -> crate::health::Probe {
        let bus = self.clone();
        crate::health::Probe::new("bus", "bus", move || {
            let bus = bus.clone();
            Box::pin(async move {
                match &bus {
                    Self::InProcess(_) => Ok(()),
                    Self::Nats(nats) => nats.check_connected(),
                }
            })
        })
    }

    /// Starts receiving what `spec` describes.
    pub async fn subscribe(&self, spec: &SubscriptionSpec) -> anyhow::Result<Subscription> {
        match self {
            Self::InProcess(bus) => {
                let group = spec
                    .queue_group
                    .clone()
                    .or_else(|| spec.durable.as_ref().map(|durable| durable.name.clone()));
                let messages = bus.subscribe(&spec.subject, group);
                Ok(Subscription::new(delivery::Source::InProcess(messages)))
            }
            Self::Nats(bus) => bus.subscribe(spec).await,
        }
    }
}
