//! The Redis trigger, Spin's: one subscription per `[[trigger.redis]]`
//! channel, each message handed to the component's
//! `spin:redis/inbound-redis@3.0.0` export (what spin-sdk's
//! `#[redis_subscriber]` builds) in a fresh instance.
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

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        inline: "
            package spindle:redis-trigger;
            world subscriber {
                export spin:redis/inbound-redis@3.0.0;
            }
        ",
        world: "spindle:redis-trigger/subscriber",
        exports: { default: async | store },
        with: { "spin:redis/redis": crate::capabilities::redis::bindings::spin::redis::redis },
    });
}

use bindings::SubscriberPre;

/// A component's handler, swapped whole by a hot deploy; a message takes
/// a clone when it starts, so it finishes on the version it began with.
type HandlerSlot = Arc<RwLock<SubscriberPre<engine::InstanceState>>>;

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
                    let handler = Arc::new(RwLock::new(subscriber_pre(loaded)?));
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
        subscriber_pre(loaded).map(drop)
    }

    /// Swaps in a new version of a running component; refused (and the old
    /// one kept) unless it exports the Redis handler.
    pub fn replace(&self, loaded: &LoadedComponent) -> anyhow::Result<()> {
        let id = &loaded.config.id;
        let Some(slot) = self.handlers.get(id) else {
            anyhow::bail!("component `{id}` is not served by this host's Redis trigger");
        };
        let pre = subscriber_pre(loaded)?;
        *slot
            .write()
            .map_err(|_| anyhow::anyhow!("component `{id}`: handler lock poisoned"))? = pre;
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

/// The component's Redis handler, if it exports one.
fn subscriber_pre(
    loaded: &LoadedComponent,
) -> anyhow::Result<SubscriberPre<engine::InstanceState>> {
    SubscriberPre::new(loaded.pre.clone()).map_err(|error| {
        anyhow::anyhow!(
            "component `{}` is Redis-triggered but does not export \
             spin:redis/inbound-redis@3.0.0 ({error})",
            loaded.config.id
        )
    })
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
        let pre = match self.handler.read() {
            Ok(pre) => pre.clone(),
            Err(_) => {
                tracing::error!(component = %self.component.id, "Redis handler lock poisoned");
                return;
            }
        };
        let id = &self.component.id;
        let mut store = engine::new_store(&self.engine, &self.component, &self.capabilities);
        let call = async {
            let started = std::time::Instant::now();
            let instance = pre.instantiate_async(&mut store).await?;
            metrics::instance_started(id, started.elapsed());
            let _released = metrics::ReleaseOnDrop(id);
            store
                .run_concurrent(async |accessor| {
                    instance
                        .spin_redis_inbound_redis()
                        .call_handle_message(accessor, payload)
                        .await
                })
                .await?
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(component = %id, channel = %self.trigger.channel, "Redis handler failed: {error:?}")
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
