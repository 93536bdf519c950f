//! The NATS bus: one async-nats client per host, reconnecting on its own.
//!
//! Publishing goes through JetStream when a stream captures the subject, so
//! the publisher learns that the message was stored (and JetStream drops a
//! duplicate by its message id); otherwise it is a core publish. Whether a
//! stream captures a subject is asked once and remembered for a few
//! seconds. (Trying JetStream first does not work: a core subscriber on the
//! subject would receive the attempt.) Durable triggers are JetStream pull
//! consumers; the others are core subscriptions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishErrorKind};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{ConnectOptions, HeaderMap, RequestErrorKind};

use super::delivery::Source;
use super::{
    DurableSpec, MESSAGE_ID_HEADER, Message, PUBLISH_TIMEOUT, PublishError, RequestError,
    Subscription, SubscriptionSpec,
};

/// JetStream's own de-duplication header.
const NATS_MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// How long a stream that spindle creates keeps messages.
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Unacknowledged messages a durable consumer allows across all replicas.
const MAX_ACK_PENDING: i64 = 4096;

/// How long the answer to "does a stream capture this subject?" is reused.
const STREAM_LOOKUP_TTL: Duration = Duration::from_secs(5);

/// Subjects remembered at most; an app publishing to more starts over.
const STREAM_LOOKUP_CAPACITY: usize = 10_000;

/// About what `message` takes on the wire with its headers (`NATS/1.0`
/// line, `name: value` lines), to compare with the server's `max_payload`.
fn wire_size(message: &Message) -> usize {
    let headers: usize = message
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    message.body.len() + headers + if headers > 0 { 12 } else { 0 }
}

/// Messages of a JetStream pull consumer.
pub type PullMessages = consumer::pull::Stream;

/// A connection to a NATS server.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// Subject -> whether a stream captures it, and when that was asked.
    captured: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

impl NatsBus {
    /// Connects to `url`. The server need not be up yet: the client retries
    /// in the background, so a host starts while NATS restarts.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = ConnectOptions::new()
            .name("spindle")
            .retry_on_initial_connect()
            .connect(url)
            .await
            // The URL may carry credentials: name the key, not the value.
            .map_err(|error| anyhow::anyhow!("[messaging] url: cannot connect to NATS: {error}"))?;
        let jetstream = jetstream::new(client.clone());
        Ok(Self {
            client,
            jetstream,
            captured: Arc::default(),
        })
    }

    /// Publishes and waits until JetStream stored the message or, when no
    /// stream captures the subject, the client wrote it to the server.
    pub async fn publish(&self, message: Message) -> Result<(), PublishError> {
        let unavailable =
            |error: &dyn std::fmt::Display| PublishError::Unavailable(error.to_string());
        let (size, max) = (wire_size(&message), self.client.server_info().max_payload);
        // 0 until the first connection tells the server's limit.
        if max > 0 && size > max {
            return Err(PublishError::TooLarge { size, max });
        }
        let mut headers = to_headers(&message.headers);
        if let Some(id) = message.header(MESSAGE_ID_HEADER) {
            headers.insert(NATS_MESSAGE_ID_HEADER, id);
        }
        let sent = async {
            if message.reply_to.is_none() && self.is_captured(&message.subject).await? {
                let stored = async {
                    self.jetstream
                        .publish_with_headers(message.subject.clone(), headers, message.body)
                        .await?
                        .await
                };
                return match stored.await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        if error.kind() == PublishErrorKind::StreamNotFound {
                            self.forget(&message.subject);
                        }
                        Err(unavailable(&error))
                    }
                };
            }
            let core = match message.reply_to {
                Some(reply) => {
                    self.client
                        .publish_with_reply_and_headers(
                            message.subject,
                            reply,
                            headers,
                            message.body,
                        )
                        .await
                }
                None => {
                    self.client
                        .publish_with_headers(message.subject, headers, message.body)
                        .await
                }
            };
            core.map_err(|error| unavailable(&error))?;
            self.client
                .flush()
                .await
                .map_err(|error| unavailable(&error))
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, sent)
            .await
            .map_err(|_| PublishError::Unavailable("no answer from NATS in time".into()))?
    }

    /// Whether a JetStream stream stores messages sent to `subject`. A
    /// lookup the server did not answer is an error, never "no stream": a
    /// message meant for a stream must not go out unstored (the caller
    /// retries, the outbox keeps its row).
    async fn is_captured(&self, subject: &str) -> Result<bool, PublishError> {
        if subject.starts_with("_INBOX.") {
            return Ok(false); // Replies are never stored, and never repeat.
        }
        let cached = self.lock_captured().get(subject).copied();
        if let Some((captured, asked)) = cached
            && asked.elapsed() < STREAM_LOOKUP_TTL
        {
            return Ok(captured);
        }
        let captured = match self.jetstream.stream_by_subject(subject).await {
            Ok(_) => true,
            Err(error) => match error.kind() {
                GetStreamByNameErrorKind::NotFound | GetStreamByNameErrorKind::InvalidSubject => {
                    false
                }
                // Nobody answers the JetStream API: the server has none.
                _ if no_responders(&error) => false,
                _ => {
                    return Err(PublishError::Unavailable(format!(
                        "looking up the stream of `{subject}`: {error}"
                    )));
                }
            },
        };
        let mut cache = self.lock_captured();
        if cache.len() >= STREAM_LOOKUP_CAPACITY {
            cache.clear();
        }
        cache.insert(subject.to_string(), (captured, Instant::now()));
        Ok(captured)
    }

    fn forget(&self, subject: &str) {
        self.lock_captured().remove(subject);
    }

    fn lock_captured(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        // A plain cache: a poisoned one is still usable.
        self.captured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the client is connected to the server now.
    pub fn check_connected(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("NATS is {state}")),
        }
    }

    /// Core NATS request/reply.
    pub async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        let request = async_nats::Request::new()
            .payload(message.body)
            .headers(to_headers(&message.headers))
            .timeout(Some(timeout));
        match self
            .client
            .send_request(message.subject.clone(), request)
            .await
        {
            Ok(reply) => Ok(from_nats(reply)),
            Err(error) => Err(match error.kind() {
                RequestErrorKind::TimedOut => RequestError::TimedOut,
                RequestErrorKind::NoResponders => RequestError::NoResponders(message.subject),
                _ => RequestError::Unavailable(error.to_string()),
            }),
        }
    }

    /// A core subscription, or a JetStream pull consumer when durable.
    pub async fn subscribe(&self, spec: &SubscriptionSpec) -> anyhow::Result<Subscription> {
        let subject = spec.subject.clone();
        if let Some(durable) = &spec.durable {
            return self.pull_consumer(&subject, durable).await;
        }
        let subscriber = match &spec.queue_group {
            Some(group) => self.client.queue_subscribe(subject, group.clone()).await,
            None => self.client.subscribe(subject).await,
        }
        .map_err(|error| anyhow::anyhow!("subscribing to `{}`: {error}", spec.subject))?;
        Ok(Subscription::new(Source::Core(subscriber)))
    }

    /// The durable consumer `durable` on the stream that captures `subject`,
    /// both created when missing. Replicas asking for the same durable share
    /// its messages.
    async fn pull_consumer(
        &self,
        subject: &str,
        durable: &DurableSpec,
    ) -> anyhow::Result<Subscription> {
        let stream = self.stream_for(subject).await?;
        let config = consumer::pull::Config {
            durable_name: Some(durable.name.clone()),
            filter_subject: subject.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: durable.ack_wait,
            max_deliver: i64::from(durable.max_deliver),
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&durable.name, config)
            .await
            .map_err(|error| anyhow::anyhow!("JetStream consumer `{}`: {error}", durable.name))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(durable.prefetch)
            .messages()
            .await
            .map_err(|error| anyhow::anyhow!("JetStream consumer `{}`: {error}", durable.name))?;
        Ok(Subscription::new(Source::JetStream(Box::new(messages))))
    }

    /// The stream capturing `subject`, or a new one named after it.
    async fn stream_for(&self, subject: &str) -> anyhow::Result<stream::Stream> {
        let name = match self.jetstream.stream_by_subject(subject).await {
            Ok(name) => name,
            Err(_) => {
                let name = stream_name(subject);
                let config = stream::Config {
                    name: name.clone(),
                    subjects: vec![subject.to_string()],
                    max_age: STREAM_MAX_AGE,
                    ..Default::default()
                };
                self.jetstream
                    .get_or_create_stream(config)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("JetStream stream {name} for `{subject}`: {error}")
                    })?;
                tracing::info!(stream = %name, %subject, "JetStream stream ready");
                name
            }
        };
        self.jetstream
            .get_stream(&name)
            .await
            .map_err(|error| anyhow::anyhow!("JetStream stream {name}: {error}"))
    }
}

/// A stream name for `subject`: upper case, wildcards spelled out, since
/// stream names may not contain `.`, `*` or `>`.
fn stream_name(subject: &str) -> String {
    let tokens: Vec<String> = subject
        .split('.')
        .map(|token| match token {
            "*" => "ANY".to_string(),
            ">" => "ALL".to_string(),
            token => token
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect(),
        })
        .collect();
    format!("SPINDLE_{}", tokens.join("_"))
}

/// Whether `error`, or an error it wraps, is a request nobody answered.
fn no_responders(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{
        RequestError as ApiError, RequestErrorKind as ApiErrorKind,
    };
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<ApiError>()
            .is_some_and(|api| api.kind() == ApiErrorKind::NoResponders)
            || error
                .downcast_ref::<async_nats::RequestError>()
                .is_some_and(|request| request.kind() == RequestErrorKind::NoResponders)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// The pairs as NATS headers. Every writer checks its headers first
/// ([`super::check_headers`]); a pair that slipped through is dropped with
/// a warning, because async-nats panics on it.
fn to_headers(pairs: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        match super::check_header(name, value) {
            Ok(()) => headers.append(name.as_str(), value.as_str()),
            Err(invalid) => tracing::warn!("header left out of a NATS message: {invalid}"),
        }
    }
    headers
}

/// A received NATS message as a bus message.
pub(super) fn from_nats(message: async_nats::Message) -> Message {
    let headers = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_string()))
        })
        .filter(|(name, _)| name != NATS_MESSAGE_ID_HEADER)
        .collect();
    Message {
        subject: message.subject.to_string(),
        body: message.payload,
        headers,
        reply_to: message.reply.map(|reply| reply.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_derived_from_the_subject() {
        assert_eq!(stream_name("order.created"), "SPINDLE_ORDER_CREATED");
        assert_eq!(stream_name("order.*"), "SPINDLE_ORDER_ANY");
        assert_eq!(stream_name("jobs.>"), "SPINDLE_JOBS_ALL");
    }

    #[test]
    fn only_a_request_nobody_answered_means_there_is_no_jetstream() {
        use async_nats::jetstream::context::{
            GetStreamByNameError, RequestError as ApiError, RequestErrorKind as ApiErrorKind,
        };
        let lookup = |kind| {
            GetStreamByNameError::with_source(
                GetStreamByNameErrorKind::Request,
                ApiError::with_source(ApiErrorKind::Other, ApiError::new(kind)),
            )
        };
        assert!(no_responders(&lookup(ApiErrorKind::NoResponders)));
        assert!(!no_responders(&lookup(ApiErrorKind::TimedOut)));
        assert!(!no_responders(&lookup(ApiErrorKind::Other)));
    }
}
