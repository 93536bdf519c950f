//! One message-triggered component: an instance per message, its
//! `message-handler` export called under the component's timeout, and the
//! guest's answer turned into what the trigger does with the message.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;

use crate::bus::Message;
use crate::capabilities::AppCapabilities;
use crate::capabilities::messaging::to_guest;
use crate::engine::{self, LoadedComponent};
use crate::manifest;
use crate::metrics;
use crate::platform::{HandlerError, MessageComponentPre};

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
    pre: MessageComponentPre<engine::InstanceState>,
    timeout: Duration,
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
            component,
            pre,
        })
    }

    /// Runs the handler on `message` in a fresh instance; what it publishes
    /// is traced under `span`.
    pub async fn handle(&self, message: &Message, span: tracing::Span) -> Outcome {
        let mut store = engine::new_store(&self.engine, &self.component, &self.capabilities);
        store.data_mut().messaging.handling(message);
        store.data_mut().trace_under(span);
        let guest_message = to_guest(message.clone());
        let id = &self.component.id;
        let call = async {
            let started = std::time::Instant::now();
            let instance = self.pre.instantiate_async(&mut store).await?;
            metrics::instance_started(id, started.elapsed());
            let _released = metrics::ReleaseOnDrop(id);
            store
                .run_concurrent(async |accessor| {
                    instance
                        .spindle_platform_message_handler()
                        .call_handle(accessor, guest_message)
                        .await
                })
                .await?
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
}
