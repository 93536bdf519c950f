//! `spindle:platform/messaging@0.1.0`: publish and request/reply on the
//! app's bus (NATS, or the in-process bus).
//!
//! A component publishes only to subjects its manifest allows
//! (`[component.x.tool.spindle] allowed_publish = ["order.*"]`), plus the
//! reply subject of the message it is handling. Every message leaves with a
//! `spindle-message-id` and a W3C `traceparent` continuing the trace of the
//! message being handled, when there is one. An instance handling several
//! messages at once tells them apart by the guest call publishing
//! ([`crate::calls`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;
use wasmtime::component::{Accessor, HasData, Linker};

use crate::bus::{self, Bus, PublishError, RequestError, TRACEPARENT_HEADER};
use crate::calls::{self, Call, Calls};
use crate::manifest::App;
use crate::platform::Message;
use crate::platform::messaging::{self as wit, Error};
use crate::{engine, telemetry};

/// The bus and what each component may publish to.
pub struct AppState {
    bus: Bus,
    allowed: HashMap<String, Arc<[String]>>,
}

impl AppState {
    /// Reads every component's `allowed_publish`.
    pub fn configure(app: &App, bus: &Bus) -> Self {
        let allowed = app
            .components
            .values()
            .map(|component| {
                let patterns: Arc<[String]> = component.spindle.allowed_publish.clone().into();
                (component.id.clone(), patterns)
            })
            .collect();
        Self {
            bus: bus.clone(),
            allowed,
        }
    }

    /// What an instance of `component` may publish to.
    pub fn instance_state(&self, component: &str, calls: &Calls) -> InstanceState {
        InstanceState {
            bus: self.bus.clone(),
            allowed: self.allowed.get(component).cloned().unwrap_or_default(),
            calls: calls.clone(),
        }
    }
}

/// One instance's access to the bus.
pub struct InstanceState {
    bus: Bus,
    allowed: Arc<[String]>,
    /// The running calls: their spans, and the messages they handle.
    calls: Calls,
}

impl InstanceState {
    /// The span of one publish or request, under the running call's span.
    fn span(call: &Call, operation: &'static str, subject: &str) -> tracing::Span {
        if !telemetry::traces_on() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            parent: call.span.id(),
            "messaging.publish",
            otel.name = %format!("{operation} {subject}"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.name = operation,
            messaging.destination.name = %subject,
        )
    }

    /// Whether `call` may publish to `subject`.
    fn may_publish(&self, call: &Call, subject: &str) -> Result<(), Error> {
        if !bus::is_literal_subject(subject) {
            return Err(Error::Other(format!(
                "`{subject}` is not a subject one can publish to (dot-separated tokens, no wildcards)"
            )));
        }
        // The sender chose the reply subject: it may name the broker's own
        // API (`$JS.API.*`, `$JS.ACK.*`, `$SYS.*`), which no handler may use.
        let is_reply = !subject.starts_with('$')
            && call
                .message
                .as_ref()
                .and_then(|handled| handled.reply_to.as_deref())
                == Some(subject);
        if is_reply
            || self
                .allowed
                .iter()
                .any(|pattern| bus::subject_matches(pattern, subject))
        {
            Ok(())
        } else {
            Err(Error::SubjectDenied(format!(
                "publishing to `{subject}` is not allowed; add it to [component.<id>.tool.spindle] allowed_publish"
            )))
        }
    }

    /// `message` with a message id and trace context added when missing:
    /// the context of `span` when traces are on, else a continuation of
    /// the `traceparent` of the message `call` handles.
    fn outgoing(
        call: &Call,
        span: &tracing::Span,
        subject: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> bus::Message {
        let mut message = bus::Message {
            subject,
            body: Bytes::from(body),
            headers,
            reply_to: None,
        };
        if message.header(TRACEPARENT_HEADER).is_none() {
            let traceparent = telemetry::traceparent(span).unwrap_or_else(|| {
                let parent = call
                    .message
                    .as_ref()
                    .and_then(|handled| handled.traceparent.as_deref());
                child_traceparent(parent)
            });
            message
                .headers
                .push((TRACEPARENT_HEADER.to_string(), traceparent));
        }
        message.ensure_message_id();
        message
    }
}

/// A `traceparent` in `parent`'s trace (a new trace without one), with a
/// fresh span id.
fn child_traceparent(parent: Option<&str>) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let span_id = &random[..16];
    let trace_id = parent
        .and_then(|parent| parent.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    format!("00-{trace_id}-{span_id}-01")
}

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Messaging>(linker, |state| &mut state.messaging)
}

struct Messaging;

impl HasData for Messaging {
    type Data<'a> = &'a mut InstanceState;
}

impl wit::Host for InstanceState {}

/// What one publish or request needs, taken from the store.
struct Prepared {
    bus: Bus,
    message: bus::Message,
    span: tracing::Span,
}

/// The checked message, its span and the bus to send it on.
fn prepare<T>(
    accessor: &Accessor<T, Messaging>,
    operation: &'static str,
    subject: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
) -> Result<Prepared, Error> {
    accessor.with(|mut access| {
        let task = calls::root_task(&mut access);
        let state = access.get();
        let call = state.calls.of(task);
        state.may_publish(&call, &subject)?;
        bus::check_headers(&headers).map_err(|invalid| Error::Other(invalid.to_string()))?;
        let span = InstanceState::span(&call, operation, &subject);
        let message = InstanceState::outgoing(&call, &span, subject, body, headers);
        Ok(Prepared {
            bus: state.bus.clone(),
            message,
            span,
        })
    })
}

impl<T> wit::HostWithStore<T> for Messaging {
    async fn publish(
        accessor: &Accessor<T, Self>,
        subject: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let Prepared { bus, message, span } =
            match prepare(accessor, "publish", subject, body, headers) {
                Ok(prepared) => prepared,
                Err(error) => return Ok(Err(error)),
            };
        let published = bus.publish(message).instrument(span).await;
        Ok(published.map_err(|error| match error {
            PublishError::Unavailable(_) => Error::Unavailable(error.to_string()),
            PublishError::TooLarge { .. } => Error::Other(error.to_string()),
        }))
    }

    async fn request(
        accessor: &Accessor<T, Self>,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Message, Error>> {
        let Prepared { bus, message, span } =
            match prepare(accessor, "request", subject, body, Vec::new()) {
                Ok(prepared) => prepared,
                Err(error) => return Ok(Err(error)),
            };
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let reply = bus.request(message, timeout).instrument(span).await;
        Ok(match reply {
            Ok(reply) => Ok(to_guest(reply)),
            Err(RequestError::TimedOut) => Err(Error::Timeout),
            Err(error) => Err(Error::Unavailable(error.to_string())),
        })
    }
}

/// A bus message in the interface's shape.
pub fn to_guest(message: bus::Message) -> Message {
    Message {
        subject: message.subject,
        body: message.body.to_vec(),
        headers: message.headers,
        reply_to: message.reply_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::HandledMessage;

    fn state(allowed: &[&str]) -> InstanceState {
        InstanceState {
            bus: Bus::InProcess(bus::InProcessBus::default()),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            calls: Calls::default(),
        }
    }

    fn handling(reply_to: Option<&str>, traceparent: Option<&str>) -> Call {
        Call {
            span: tracing::Span::none(),
            message: Some(Arc::new(HandledMessage {
                reply_to: reply_to.map(str::to_owned),
                traceparent: traceparent.map(str::to_owned),
            })),
        }
    }

    #[test]
    fn only_allowed_subjects_and_the_reply_subject_may_be_published_to() {
        let state = state(&["order.*"]);
        let call = Call::default();
        assert!(state.may_publish(&call, "order.created").is_ok());
        assert!(matches!(
            state.may_publish(&call, "user.created"),
            Err(Error::SubjectDenied(_))
        ));
        assert!(matches!(
            state.may_publish(&call, "order.*"),
            Err(Error::Other(_))
        ));
        let call = handling(Some("_INBOX.abc"), None);
        assert!(state.may_publish(&call, "_INBOX.abc").is_ok());
        assert!(matches!(
            state.may_publish(&call, "_INBOX.other"),
            Err(Error::SubjectDenied(_))
        ));
        // Another message's call may not answer this one's reply subject.
        let other = handling(Some("_INBOX.xyz"), None);
        assert!(matches!(
            state.may_publish(&other, "_INBOX.abc"),
            Err(Error::SubjectDenied(_))
        ));
    }

    #[test]
    fn a_reply_subject_naming_the_broker_api_is_refused() {
        let state = state(&["order.*"]);
        for reply_to in [
            "$JS.API.STREAM.DELETE.ORDERS",
            "$JS.ACK.ORDERS.saga.1.2.3.4.5",
            "$SYS.REQ.SERVER.PING",
        ] {
            let call = handling(Some(reply_to), None);
            assert!(
                matches!(
                    state.may_publish(&call, reply_to),
                    Err(Error::SubjectDenied(_))
                ),
                "{reply_to}"
            );
        }
    }

    #[test]
    fn published_messages_continue_the_trace_being_handled() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let child = child_traceparent(Some(parent));
        assert!(
            child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{child}"
        );
        assert_ne!(child, parent);
        let fresh = child_traceparent(None);
        assert_eq!(fresh.len(), parent.len());
        let call = handling(None, Some(parent));
        let message =
            InstanceState::outgoing(&call, &tracing::Span::none(), "a.b".into(), vec![], vec![]);
        assert!(
            message
                .header("traceparent")
                .unwrap_or("")
                .contains("0af7651916cd43dd")
        );
        assert!(message.header(bus::MESSAGE_ID_HEADER).is_some());
    }
}
