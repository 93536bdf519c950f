//! The Redis trigger, Spin's: one subscription per `[[trigger.redis]]`
//! channel, each message handed in a fresh instance to the component's
//! handler: `spin:redis/inbound-redis@3.0.0` (spin-sdk 7's
//! `#[redis_subscriber]`, in [`spin_v3`]) or `fermyon:spin/inbound-redis`
//! (Spin 2 and 3 apps: spin-sdk 2-6's `#[redis_component]`, the JS, Python
//! and Go SDKs, in [`fermyon`]).
//!
//! Redis pub/sub keeps nothing, so delivery is at most once, as in Spin: a
//! handler that fails or traps is logged and the message is gone. Each
//! subscription holds at most `max_concurrency` messages, and each waits
//! for the component's admission in line with its other callers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use wasmtime::Engine;

use super::Admissions;
use super::admission::Admission;
use crate::capabilities::AppCapabilities;
use crate::engine::{self, LoadedComponent};
use crate::manifest::{self, App};
use crate::metrics;

mod fermyon;
mod spin_v3;

/// A component's handler, swapped whole by a hot deploy; a message takes
/// a clone when it starts, so it finishes on the version it began with.
type HandlerSlot = Arc<RwLock<Handler>>;

/// The Redis handler a component exports, in whichever interface version.
#[derive(Clone)]
enum Handler {
    SpinV3(spin_v3::Pre),
    Fermyon(fermyon::Pre),
}

impl Handler {
    /// The component's Redis handler, if it exports one.
    fn of(loaded: &LoadedComponent) -> anyhow::Result<Self> {
        if let Ok(pre) = spin_v3::Pre::new(loaded.pre.clone()) {
            return Ok(Self::SpinV3(pre));
        }
        fermyon::Pre::new(loaded.pre.clone())
            .map(Self::Fermyon)
            .map_err(|error| {
                anyhow::anyhow!(
                    "component `{}` is Redis-triggered but exports neither \
                     spin:redis/inbound-redis@3.0.0 nor fermyon:spin/inbound-redis ({error})",
                    loaded.config.id
                )
            })
    }

    /// Instantiates the component in `store` and hands it `payload`; the
    /// inner error is the handler's own failure.
    async fn deliver(
        &self,
        store: &mut wasmtime::Store<engine::InstanceState>,
        id: &str,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        let started = std::time::Instant::now();
        match self {
            Self::SpinV3(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                metrics::instance_started(id, started.elapsed());
                let _released = metrics::ReleaseOnDrop(id);
                spin_v3::deliver(instance, store, payload).await
            }
            Self::Fermyon(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                metrics::instance_started(id, started.elapsed());
                let _released = metrics::ReleaseOnDrop(id);
                fermyon::deliver(instance, store, payload).await
            }
        }
    }
}

/// Delivers Redis channel messages to the app's Redis-triggered components.
pub struct RedisTrigger {
    subscribers: Vec<Arc<Subscriber>>,
    handlers: HashMap<String, HandlerSlot>,
}

/// One `[[trigger.redis]]` at work.
struct Subscriber {
    trigger: manifest::RedisTrigger,
    component: Arc<manifest::Component>,
    handler: HandlerSlot,
    admission: Arc<Admission>,
    engine: Engine,
    capabilities: Arc<AppCapabilities>,
    timeout: Duration,
}

impl RedisTrigger {
    /// Checks each triggered component's export; triggers of components
    /// that are not loaded (not selected with `-c`) are left out.
    pub fn new(
        app: &App,
        engine: &Engine,
        capabilities: &Arc<AppCapabilities>,
        components: &[LoadedComponent],
        admissions: &Admissions,
    ) -> anyhow::Result<Self> {
        let mut subscribers = Vec::new();
        let mut handlers: HashMap<String, HandlerSlot> = HashMap::new();
        for trigger in &app.redis_triggers {
            let Some(loaded) = components.iter().find(|c| c.config.id == trigger.component) else {
                continue;
            };
            let handler = match handlers.get(&trigger.component) {
                Some(handler) => handler.clone(),
                None => {
                    let handler = Arc::new(RwLock::new(Handler::of(loaded)?));
                    handlers.insert(trigger.component.clone(), handler.clone());
                    handler
                }
            };
            let admission = admissions.get(&trigger.component).cloned().ok_or_else(|| {
                anyhow::anyhow!("component `{}` has no admission control", trigger.component)
            })?;
            subscribers.push(Arc::new(Subscriber {
                trigger: trigger.clone(),
                timeout: engine::call_timeout(&loaded.config),
                component: loaded.config.clone(),
                handler,
                admission,
                engine: engine.clone(),
                capabilities: capabilities.clone(),
            }));
        }
        Ok(Self {
            subscribers,
            handlers,
        })
    }

    /// Whether `id` is one of the Redis-triggered components this host runs.
    pub fn serves(&self, id: &str) -> bool {
        self.handlers.contains_key(id)
    }

    /// Whether `loaded` could replace its running version (it exports the
    /// Redis handler).
    pub fn check(&self, loaded: &LoadedComponent) -> anyhow::Result<()> {
        Handler::of(loaded).map(drop)
    }

    /// Swaps in a new version of a running component; refused (and the old
    /// one kept) unless it exports the Redis handler.
    pub fn replace(&self, loaded: &LoadedComponent) -> anyhow::Result<()> {
        let id = &loaded.config.id;
        let Some(slot) = self.handlers.get(id) else {
            anyhow::bail!("component `{id}` is not served by this host's Redis trigger");
        };
        let handler = Handler::of(loaded)?;
        *slot
            .write()
            .map_err(|_| anyhow::anyhow!("component `{id}`: handler lock poisoned"))? = handler;
        Ok(())
    }

    /// The channels subscribed to, as `(component, channel)`.
    pub fn subscriptions(&self) -> Vec<(String, String)> {
        self.subscribers
            .iter()
            .map(|s| (s.trigger.component.clone(), s.trigger.channel.clone()))
            .collect()
    }

    /// Subscribes every channel; fails, naming the trigger, when a server
    /// cannot be reached, so `up` stops rather than serve without it.
    pub async fn subscribe(&self) -> anyhow::Result<Vec<Subscription>> {
        let mut subscriptions = Vec::with_capacity(self.subscribers.len());
        for subscriber in &self.subscribers {
            let trigger = &subscriber.trigger;
            let context = || {
                format!(
                    "component `{}`: [[trigger.redis]] channel `{}`",
                    trigger.component, trigger.channel
                )
            };
            let client = redis::Client::open(trigger.address.as_str())
                .map_err(|error| {
                    anyhow::anyhow!("the address is not a Redis URL: {}", error.category())
                })
                .with_context(context)?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|error| anyhow::anyhow!("cannot connect to Redis: {}", error.category()))
                .with_context(context)?;
            pubsub
                .subscribe(&trigger.channel)
                .await
                .map_err(|error| anyhow::anyhow!("cannot subscribe: {error}"))
                .with_context(context)?;
            tracing::info!(component = %trigger.component, channel = %trigger.channel, "subscribed to Redis");
            subscriptions.push(Subscription {
                subscriber: subscriber.clone(),
                pubsub,
            });
        }
        Ok(subscriptions)
    }
}

/// A subscribed channel, ready to [`Subscription::run`].
pub struct Subscription {
    subscriber: Arc<Subscriber>,
    pubsub: redis::aio::PubSub,
}

impl Subscription {
    /// Hands each message to the component until `stopped` turns true.
    /// At most the component's `max_concurrency` messages are in hand at
    /// once: past that the channel is not read (and Redis, not the host,
    /// holds what comes meanwhile).
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let in_flight = Arc::new(Semaphore::new(
            engine::max_concurrency(&self.subscriber.component) as usize,
        ));
        let mut messages = self.pubsub.into_on_message();
        loop {
            let permit = tokio::select! {
                permit = in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            let message = tokio::select! {
                message = messages.next() => match message {
                    Some(message) => message,
                    None => {
                        tracing::warn!(channel = %self.subscriber.trigger.channel, "Redis subscription ended");
                        break;
                    }
                },
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            let subscriber = self.subscriber.clone();
            let payload = message.get_payload_bytes().to_vec();
            tokio::spawn(async move {
                subscriber.handle(payload).await;
                drop(permit);
            });
        }
    }
}

impl Subscriber {
    /// Runs the handler on one message in a fresh instance, under the
    /// component's timeout; what goes wrong is logged.
    async fn handle(&self, payload: Vec<u8>) {
        let _admitted = self.admission.admit_patiently().await;
        let handler = match self.handler.read() {
            Ok(handler) => handler.clone(),
            Err(_) => {
                tracing::error!(component = %self.component.id, "Redis handler lock poisoned");
                return;
            }
        };
        let id = &self.component.id;
        let mut store = engine::new_store(&self.engine, &self.component, &self.capabilities);
        let call = handler.deliver(&mut store, id, payload);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(component = %id, channel = %self.trigger.channel, "Redis handler failed: {error}")
            }
            Ok(Err(trap)) => {
                tracing::warn!(component = %id, channel = %self.trigger.channel, "Redis handler trapped: {trap:?}")
            }
            Err(_) => tracing::warn!(
                component = %id,
                channel = %self.trigger.channel,
                "Redis handler did not finish within {:?}",
                self.timeout
            ),
        }
    }
}
