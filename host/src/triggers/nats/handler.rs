//! One message-triggered component: its instances, each reused for many
//! messages, its `message-handler` export called under the component's
//! timeout, and the guest's answer turned into what the trigger does with
//! the message.
//!
//! An instance handles one message at a time and goes back to the idle list
//! after it answered; it is let go after [`MAX_MESSAGES_PER_INSTANCE`]
//! messages, after a trap or an overrun, and after [`IDLE_INSTANCE_TIMEOUT`]
//! without a message. Reuse saves the instantiation and the store per
//! message, which was most of a short handler's cost. One message at a time
//! keeps what the instance knows about "the message it is handling" (its
//! reply subject, its trace) exact: host calls do not say which guest task
//! made them.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store};

use crate::bus::Message;
use crate::capabilities::AppCapabilities;
use crate::capabilities::messaging::to_guest;
use crate::engine::{self, InstanceState, LoadedComponent};
use crate::manifest;
use crate::metrics;
use crate::platform::{HandlerError, MessageComponent, MessageComponentPre};

/// Messages one instance handles before it is replaced, as an HTTP
/// instance's requests are capped: what a guest leaks per call stays bounded.
const MAX_MESSAGES_PER_INSTANCE: usize = 128;

/// An instance with no message for this long is released.
const IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the handler made of one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Handled: acknowledge.
    Done,
    /// The guest asked for a redelivery after this long.
    Retry(Duration),
    /// The guest refused it for good: dead-letter with this reason.
    Reject(String),
    /// The call trapped or overran: redeliver with backoff, naming why.
    Failed(String),
}

/// Makes instances of one message-triggered component and calls them.
pub struct MessageHandler {
    engine: Engine,
    capabilities: Arc<AppCapabilities>,
    component: Arc<manifest::Component>,
    pre: MessageComponentPre<InstanceState>,
    timeout: Duration,
    /// Instances between messages, the longest idle first.
    idle: Mutex<Vec<IdleInstance>>,
    /// At most this many instances wait in `idle`: as many as may run.
    max_idle: usize,
    /// Whether the task releasing idle instances runs.
    reaper_started: std::sync::Once,
}

/// One instance and its store.
struct HandlerInstance {
    store: Store<InstanceState>,
    instance: MessageComponent,
    handled: usize,
    /// Counts the instance out of the metrics when it goes.
    _released: ReleasedOnDrop,
}

struct IdleInstance {
    instance: HandlerInstance,
    since: Instant,
}

struct ReleasedOnDrop(Arc<manifest::Component>);

impl Drop for ReleasedOnDrop {
    fn drop(&mut self) {
        metrics::instance_released(&self.0.id);
    }
}

impl MessageHandler {
    /// Checks that `loaded` exports `spindle:platform/message-handler`.
    pub fn new(
        engine: &Engine,
        capabilities: &Arc<AppCapabilities>,
        loaded: &LoadedComponent,
    ) -> anyhow::Result<Self> {
        let component = loaded.config.clone();
        let pre = MessageComponentPre::new(loaded.pre.clone()).map_err(|error| {
            anyhow::anyhow!(
                "component `{}` is NATS-triggered but does not export \
                 spindle:platform/message-handler@0.1.0 ({error})",
                component.id
            )
        })?;
        Ok(Self {
            engine: engine.clone(),
            capabilities: capabilities.clone(),
            timeout: engine::call_timeout(&component),
            max_idle: engine::max_concurrency(&component) as usize,
            component,
            pre,
            idle: Mutex::new(Vec::new()),
            reaper_started: std::sync::Once::new(),
        })
    }

    /// Runs the handler on `message` in an idle instance or a new one; what
    /// it publishes is traced under `span`.
    pub async fn handle(self: &Arc<Self>, message: &Message, span: tracing::Span) -> Outcome {
        let guest_message = to_guest(message.clone());
        let call = async {
            let mut instance = match self.take_idle() {
                Some(instance) => instance,
                None => self.instantiate().await?,
            };
            let HandlerInstance {
                store,
                instance: component,
                ..
            } = &mut instance;
            store.data_mut().messaging.handling(message);
            store.data_mut().trace_under(span);
            let answer = store
                .run_concurrent(async |accessor| {
                    component
                        .spindle_platform_message_handler()
                        .call_handle(accessor, guest_message)
                        .await
                })
                .await??;
            // Only an instance that answered is reused: one that trapped is
            // poisoned, and one that overran is dropped mid-call below.
            self.put_back(instance);
            Ok::<_, wasmtime::Error>(answer)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Ok(()))) => Outcome::Done,
            Ok(Ok(Err(HandlerError::Retry(ms)))) => {
                Outcome::Retry(Duration::from_millis(u64::from(ms)))
            }
            Ok(Ok(Err(HandlerError::Reject(reason)))) => Outcome::Reject(reason),
            Ok(Err(trap)) => {
                tracing::warn!(component = %self.component.id, "message handler failed: {trap:?}");
                Outcome::Failed(format!("the handler trapped: {trap}"))
            }
            Err(_) => Outcome::Failed(format!(
                "the handler did not finish within {:?}",
                self.timeout
            )),
        }
    }

    async fn instantiate(&self) -> wasmtime::Result<HandlerInstance> {
        let started = Instant::now();
        let mut store = engine::new_store(&self.engine, &self.component, &self.capabilities);
        let instance = self.pre.instantiate_async(&mut store).await?;
        metrics::instance_started(&self.component.id, started.elapsed());
        Ok(HandlerInstance {
            store,
            instance,
            handled: 0,
            _released: ReleasedOnDrop(self.component.clone()),
        })
    }

    /// The most recently used idle instance: its memory is the warmest.
    fn take_idle(&self) -> Option<HandlerInstance> {
        self.lock_idle().pop().map(|idle| idle.instance)
    }

    fn put_back(self: &Arc<Self>, mut instance: HandlerInstance) {
        instance.handled += 1;
        if instance.handled >= MAX_MESSAGES_PER_INSTANCE {
            return;
        }
        {
            let mut idle = self.lock_idle();
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(IdleInstance {
                instance,
                since: Instant::now(),
            });
        }
        self.reaper_started
            .call_once(|| drop(tokio::spawn(release_idle(Arc::downgrade(self)))));
    }

    /// Drops the instances idle for longer than [`IDLE_INSTANCE_TIMEOUT`].
    fn release_idle_since(&self, now: Instant) {
        let expired: Vec<IdleInstance> = {
            let mut idle = self.lock_idle();
            let fresh = idle
                .iter()
                .position(|idle| now.duration_since(idle.since) < IDLE_INSTANCE_TIMEOUT)
                .unwrap_or(idle.len());
            idle.drain(..fresh).collect()
        };
        // Dropped outside the lock: a store's drop returns its slot to the pool.
        drop(expired);
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleInstance>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Releases `handler`'s idle instances as they time out, until the handler
/// itself is gone (replaced by a deploy, or the host stopped).
async fn release_idle(handler: Weak<MessageHandler>) {
    let mut tick = tokio::time::interval(IDLE_INSTANCE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(handler) = handler.upgrade() else {
            return;
        };
        handler.release_idle_since(Instant::now());
    }
}
