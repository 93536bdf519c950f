//! The NATS trigger: one subscription per `[[trigger.nats]]`, each message
//! handed to the component's `message-handler` export.
//!
//! What happens to a message follows the handler's answer: acknowledged when
//! it succeeded; redelivered after a delay when it asked to retry, trapped or
//! overran; dead-lettered (with the original headers and the reason) when it
//! rejected the message or `max_deliver` deliveries were used up. On
//! JetStream (`durable`) this is ack / nak with delay / term, with
//! in-progress acks while a long handler runs; on core NATS and the
//! in-process bus the subscription redelivers by itself, with the same rules
//! but no durability (see [`crate::bus::Delivery`]). A local redelivery
//! queue that is full dead-letters the message rather than hold more.
//! Each trigger keeps at most the component's
//! `max_concurrency` messages in flight and pulls no more until one settles.

mod handler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use wasmtime::Engine;

use super::Admissions;
use super::admission::Admission;
use crate::bus::{Bus, Delivery, DurableSpec, Message, RetryError, Subscription, SubscriptionSpec};
use crate::capabilities::AppCapabilities;
use crate::engine::{self, LoadedComponent};
use crate::manifest::{self, App};
use crate::metrics::SubscriptionMetrics;
use crate::telemetry;
pub use handler::{MessageHandler, Outcome};
use tracing::Instrument;

/// Header naming why a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "spindle-dead-letter-reason";
/// Header naming the subject a dead-lettered message was first sent to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "spindle-original-subject";
/// Header counting the deliveries a dead-lettered message had.
pub const DELIVERIES_HEADER: &str = "spindle-deliveries";

/// Redelivery delay after a trap or overrun: doubles per delivery up to this.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// How long handlers already running get to finish once shutdown starts.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// A component's handler, swapped whole by a hot deploy; a message clones
/// the `Arc` when it starts, so it finishes on the version it began with.
type HandlerSlot = Arc<ArcSwap<MessageHandler>>;

/// Delivers messages from the bus to the app's NATS-triggered components.
pub struct NatsTrigger {
    handlers: HashMap<String, HandlerSlot>,
    /// Subscribed at start-up, consumed by [`NatsTrigger::run`].
    consumers: Mutex<Vec<(Arc<Consumer>, Subscription)>>,
    engine: Engine,
    capabilities: Arc<AppCapabilities>,
}

impl NatsTrigger {
    /// Checks each triggered component's export and subscribes, so that no
    /// message published after start-up is missed. Triggers of components
    /// that are not loaded (not selected with `-c`) are left out.
    pub async fn subscribe(
        app: &App,
        engine: &Engine,
        capabilities: &Arc<AppCapabilities>,
        components: &[LoadedComponent],
        admissions: &Admissions,
        bus: &Bus,
    ) -> anyhow::Result<Self> {
        let mut handlers: HashMap<String, HandlerSlot> = HashMap::new();
        let mut consumers = Vec::new();
        for trigger in &app.nats_triggers {
            let Some(loaded) = components.iter().find(|c| c.config.id == trigger.component) else {
                continue;
            };
            let handler = match handlers.get(&trigger.component) {
                Some(handler) => handler.clone(),
                None => {
                    let handler = MessageHandler::new(engine, capabilities, loaded)?;
                    let slot = Arc::new(ArcSwap::from_pointee(handler));
                    handlers.insert(trigger.component.clone(), slot.clone());
                    slot
                }
            };
            let admission = admissions.get(&trigger.component).cloned().ok_or_else(|| {
                anyhow::anyhow!("component `{}` has no admission control", trigger.component)
            })?;
            let in_flight = engine::max_concurrency(&loaded.config);
            let spec = subscription_spec(trigger, in_flight as usize);
            let subscription = bus.subscribe(&spec).await.map_err(|error| {
                error.context(format!(
                    "component `{}`: [[trigger.nats]] subject `{}`",
                    trigger.component, trigger.subject
                ))
            })?;
            tracing::info!(component = %trigger.component, subject = %trigger.subject, durable = ?trigger.durable, "subscribed");
            let consumer = Consumer {
                trigger: trigger.clone(),
                handler,
                admission,
                bus: bus.clone(),
                limit: in_flight,
                metrics: SubscriptionMetrics::new(&trigger.component, &trigger.subject),
            };
            consumers.push((Arc::new(consumer), subscription));
        }
        Ok(Self {
            handlers,
            consumers: Mutex::new(consumers),
            engine: engine.clone(),
            capabilities: capabilities.clone(),
        })
    }

    /// The subjects subscribed to, as `(component, subject)`.
    pub fn subscriptions(&self) -> Vec<(String, String)> {
        self.lock_consumers()
            .iter()
            .map(|(consumer, _)| {
                (
                    consumer.trigger.component.clone(),
                    consumer.trigger.subject.clone(),
                )
            })
            .collect()
    }

    /// Whether `id` is one of the NATS-triggered components this host runs.
    pub fn serves(&self, id: &str) -> bool {
        self.handlers.contains_key(id)
    }

    /// Whether `loaded` could replace its running version (it exports the
    /// message handler).
    pub fn check(&self, loaded: &LoadedComponent) -> anyhow::Result<()> {
        MessageHandler::new(&self.engine, &self.capabilities, loaded).map(drop)
    }

    /// Swaps in a new version of a running component; refused (and the old
    /// one kept) unless it exports the message handler.
    pub fn replace(&self, loaded: &LoadedComponent) -> anyhow::Result<()> {
        let id = &loaded.config.id;
        let Some(slot) = self.handlers.get(id) else {
            anyhow::bail!("component `{id}` is not served by this host's NATS trigger");
        };
        let handler = MessageHandler::new(&self.engine, &self.capabilities, loaded)?;
        slot.store(Arc::new(handler));
        Ok(())
    }

    /// Delivers messages until `stopped` turns true, then stops pulling and
    /// lets the handlers already running finish.
    pub async fn run(&self, stopped: watch::Receiver<bool>) {
        let consumers = std::mem::take(&mut *self.lock_consumers());
        let running: Vec<_> = consumers
            .into_iter()
            .map(|(consumer, subscription)| {
                tokio::spawn(consumer.consume(subscription, stopped.clone()))
            })
            .collect();
        for consumer in running {
            let _ = consumer.await;
        }
    }

    fn lock_consumers(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<Consumer>, Subscription)>> {
        self.consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn subscription_spec(trigger: &manifest::NatsTrigger, prefetch: usize) -> SubscriptionSpec {
    SubscriptionSpec {
        subject: trigger.subject.clone(),
        queue_group: trigger.queue_group.clone(),
        durable: trigger.durable.as_ref().map(|name| DurableSpec {
            name: name.clone(),
            ack_wait: trigger.ack_wait,
            max_deliver: trigger.max_deliver,
            prefetch,
        }),
    }
}

/// One `[[trigger.nats]]` at work.
struct Consumer {
    trigger: manifest::NatsTrigger,
    handler: HandlerSlot,
    admission: Arc<Admission>,
    bus: Bus,
    /// Most messages handled at once; at the limit, nothing is pulled.
    limit: u32,
    metrics: SubscriptionMetrics,
}

impl Consumer {
    async fn consume(
        self: Arc<Self>,
        mut subscription: Subscription,
        mut stopped: watch::Receiver<bool>,
    ) {
        // The deliveries being handled run in this task, not a task each:
        // the handler's work happens in its instance's task, and what is
        // left here (metrics, acks) is too little to pay a spawn for.
        let mut handling = FuturesUnordered::new();
        let limit = self.limit as usize;
        loop {
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                Some(()) = handling.next(), if !handling.is_empty() => {}
                delivery = subscription.next(), if handling.len() < limit => match delivery {
                    Some(delivery) => handling.push(self.process(delivery)),
                    None => {
                        tracing::warn!(subject = %self.trigger.subject, "subscription ended");
                        break;
                    }
                },
            }
        }
        // Unsubscribe first: JetStream redelivers what was fetched but not
        // handled to the other replicas once its ack wait runs out.
        drop(subscription);
        let _ = tokio::time::timeout(DRAIN_GRACE, async {
            while handling.next().await.is_some() {}
        })
        .await;
    }

    /// The consumer span, continuing the publisher's trace, and the
    /// component call under it; none when traces are off.
    fn spans(&self, message: &Message) -> (tracing::Span, tracing::Span) {
        if !telemetry::traces_on() {
            return (tracing::Span::none(), tracing::Span::none());
        }
        let consumer = tracing::info_span!(
            "messaging.process",
            otel.name = %format!("process {}", message.subject),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %message.subject,
            messaging.subscription = %self.trigger.subject,
        );
        let headers = message
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        telemetry::continue_trace(&consumer, headers);
        let component = &self.trigger.component;
        let call = tracing::info_span!(
            parent: &consumer,
            "component.call",
            otel.name = %format!("call {component}"),
            component = %component,
        );
        (consumer, call)
    }

    /// Runs the handler on one delivery and settles it.
    async fn process(&self, delivery: Delivery) {
        let (message, attempt) = (delivery.message().clone(), delivery.attempt());
        self.metrics.received.inc();
        let outcome = self.run_handler(&delivery, &message).await;
        tracing::debug!(subject = %message.subject, attempt, ?outcome, "message handled");
        let (delay, why) = match outcome {
            Outcome::Done => {
                self.metrics.acked.inc();
                return self.acknowledge(&delivery).await;
            }
            Outcome::Reject(reason) => {
                return self
                    .dead_letter(&delivery, message, attempt, format!("rejected: {reason}"))
                    .await;
            }
            Outcome::Retry(delay) => (delay, "the handler asked to retry".to_string()),
            Outcome::Failed(why) => (failure_backoff(attempt), why),
        };
        if attempt >= self.trigger.max_deliver {
            let reason = format!("gave up after {attempt} deliveries: {why}");
            return self.dead_letter(&delivery, message, attempt, reason).await;
        }
        match delivery.retry(delay).await {
            Ok(()) => {
                self.metrics.redelivered.inc();
            }
            Err(RetryError::Server(error)) => {
                self.metrics.redelivered.inc();
                tracing::warn!(subject = %message.subject, "nak failed (the server redelivers after ack_wait): {error}");
            }
            Err(full @ RetryError::QueueFull) => {
                let reason = format!("cannot redeliver ({full}): {why}");
                self.dead_letter(&delivery, message, attempt, reason).await;
            }
        }
    }

    /// The handler's outcome. The message waits for the component in line
    /// with the other callers: one that finds the component busy (with
    /// HTTP, say) waits its turn instead of using up a delivery.
    async fn run_handler(&self, delivery: &Delivery, message: &Message) -> Outcome {
        let handler = self.handler.load_full();
        let (consumer_span, call_span) = self.spans(message);
        let work = async {
            let _admitted = self.admission.admit_patiently().await;
            handler
                .handle(message, call_span.clone())
                .instrument(call_span)
                .instrument(consumer_span)
                .await
        };
        self.keeping_in_progress(delivery, work).await
    }

    /// Runs `work`, telling the server now and then that the delivery is
    /// still being worked on, so it is not redelivered meanwhile.
    async fn keeping_in_progress<T>(
        &self,
        delivery: &Delivery,
        work: impl Future<Output = T>,
    ) -> T {
        if !delivery.needs_progress() {
            return work.await;
        }
        tokio::pin!(work);
        let mut progress = tokio::time::interval(self.trigger.ack_wait / 2);
        progress.tick().await;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = progress.tick() => {
                    if let Err(error) = delivery.in_progress().await {
                        tracing::warn!(subject = %delivery.message().subject, "in-progress ack failed: {error}");
                    }
                }
            }
        }
    }

    async fn acknowledge(&self, delivery: &Delivery) {
        if let Err(error) = delivery.ack().await {
            // The server redelivers it; handlers dedupe on the message id.
            tracing::warn!(subject = %self.trigger.subject, "ack failed: {error}");
        }
    }

    /// Sends `message` to the dead-letter subject with the reason; only then
    /// does JetStream forget it.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        message: Message,
        attempt: u32,
        reason: String,
    ) {
        // A trap's text spans lines and a guest's reason is its own: a
        // header value must be one line, or the client refuses to send it.
        let reason = crate::bus::single_line(&reason);
        let subject = message.subject.clone();
        let mut headers = message.headers;
        headers.push((DEAD_LETTER_REASON_HEADER.into(), reason.clone()));
        headers.push((ORIGINAL_SUBJECT_HEADER.into(), subject.clone()));
        headers.push((DELIVERIES_HEADER.into(), attempt.to_string()));
        let dead = Message {
            subject: self.trigger.dead_letter_subject.clone(),
            body: message.body,
            headers,
            reply_to: None,
        };
        match self.bus.publish(dead).await {
            Ok(()) => {
                self.metrics.dead_lettered.inc();
                tracing::warn!(component = %self.trigger.component, %subject, dead_letter_subject = %self.trigger.dead_letter_subject, "dead-lettered: {reason}");
                if let Err(error) = delivery.terminate().await {
                    tracing::warn!(%subject, "terminating a dead-lettered message failed: {error}");
                }
            }
            Err(error) => {
                tracing::error!(%subject, "cannot dead-letter ({reason}): {error}");
                // Keep it (on the server, or here while there is room);
                // the next delivery tries again.
                let _ = delivery.retry(MAX_FAILURE_BACKOFF).await;
            }
        }
    }
}

/// 1 s after the first failure, doubling, at most [`MAX_FAILURE_BACKOFF`].
fn failure_backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(5);
    (Duration::from_secs(1) * 2u32.pow(exponent)).min(MAX_FAILURE_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_a_limit() {
        assert_eq!(failure_backoff(1), Duration::from_secs(1));
        assert_eq!(failure_backoff(2), Duration::from_secs(2));
        assert_eq!(failure_backoff(4), Duration::from_secs(8));
        assert_eq!(failure_backoff(40), MAX_FAILURE_BACKOFF);
    }
}
