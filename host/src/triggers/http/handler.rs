//! One component behind the HTTP trigger: how its instances are made, reused
//! and retired.
//!
//! wasmtime-wasi-http's `ProxyHandler` owns the dispatch (both
//! `wasi:http/handler@0.3` and `incoming-handler@0.2`); this module decides
//! the policy it asks about: how many requests an instance takes, how long a
//! call may run, when an idle instance is let go.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;
use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};

use super::live::{LiveInstances, Tracked};
use crate::capabilities::AppCapabilities;
use crate::engine::{self, InstanceState, LoadedComponent};
use crate::manifest;
use crate::metrics;

/// A call that has not answered by then is abandoned with a 504.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An instance with no request for this long is released.
const IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a guest may keep working after its last response.
const POST_RETURN_TIMEOUT: Duration = Duration::from_secs(5);

/// How many requests one instance serves before it is replaced, and how many
/// at once. WASI 0.2 guests are not written to be reused, so they get one.
#[derive(Clone, Copy, Debug)]
struct ReusePolicy {
    max_requests: usize,
    max_concurrent: usize,
}

const P3_REUSE: ReusePolicy = ReusePolicy {
    max_requests: 128,
    max_concurrent: 16,
};

const P2_REUSE: ReusePolicy = ReusePolicy {
    max_requests: 1,
    max_concurrent: 1,
};

/// Makes instances of one HTTP component for wasmtime-wasi-http's handler.
pub struct ComponentInstances {
    engine: Engine,
    capabilities: Arc<AppCapabilities>,
    component: Arc<manifest::Component>,
    pre: ProxyPre<InstanceState>,
    reuse: ReusePolicy,
    request_timeout: Duration,
    live: LiveInstances,
}

impl ComponentInstances {
    /// Checks that `loaded` exports an HTTP handler, in either WASI version;
    /// its instances are counted in `live`.
    pub fn new(
        engine: &Engine,
        capabilities: &Arc<AppCapabilities>,
        loaded: &LoadedComponent,
        live: &LiveInstances,
    ) -> anyhow::Result<Self> {
        let component = loaded.config.clone();
        let (pre, reuse) = match wasmtime_wasi_http::p3::bindings::ServicePre::new(
            loaded.pre.clone(),
        ) {
            Ok(pre) => (ProxyPre::P3(pre), P3_REUSE),
            Err(_) => {
                let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(loaded.pre.clone())
                        .map_err(|error| {
                            anyhow::anyhow!(
                                "component `{}` is HTTP-triggered but exports neither \
                                 wasi:http/handler@0.3 nor wasi:http/incoming-handler@0.2 ({error})",
                                component.id
                            )
                        })?;
                (ProxyPre::P2(pre), P2_REUSE)
            }
        };
        let request_timeout = component.spindle.timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        Ok(Self {
            engine: engine.clone(),
            capabilities: capabilities.clone(),
            component,
            pre,
            reuse,
            request_timeout,
            live: live.clone(),
        })
    }

    /// The component's id, for logs.
    pub fn id(&self) -> &str {
        &self.component.id
    }

    /// How long one call may take before its caller gets a 504.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

impl HandlerState for ComponentInstances {
    type StoreData = InstanceState;
    type WorkerExpiration = Expiration;
    type WorkerState = InstancePolicy;

    async fn instantiate(
        &self,
    ) -> wasmtime::Result<Instance<InstanceState, Expiration, InstancePolicy>> {
        let started = Instant::now();
        let tracked = self.live.track();
        let mut store = engine::new_store(&self.engine, &self.component, &self.capabilities);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        metrics::instance_started(&self.component.id, started.elapsed());
        tracing::debug!(component = %self.component.id, "instance started");
        Ok(Instance {
            store,
            proxy,
            view: InstanceState::http_view,
            expiration: Expiration::new(self.request_timeout, &self.live),
            state: InstancePolicy {
                component: self.component.id.clone(),
                reuse: self.reuse,
                tracked,
            },
        })
    }
}

/// What the trigger hands the instance with each request.
pub struct CallData {
    /// The request's component span, under which the guest's capability
    /// calls (a publish, for one) are traced.
    pub span: tracing::Span,
    /// The call's deadline: the component's `timeout`, or a gRPC caller's
    /// shorter `grpc-timeout`.
    pub timeout: Duration,
}

/// Per-instance answers to "take another request?" and "when to give up?".
pub struct InstancePolicy {
    component: String,
    reuse: ReusePolicy,
    /// Counts this instance as live until its worker lets it go.
    tracked: Tracked,
}

impl WorkerState for InstancePolicy {
    type StoreData = InstanceState;
    type RequestData = CallData;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, InstanceState>,
        call: CallData,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.data_mut().trace_under(call.span);
        Box::pin(tokio::time::sleep(call.timeout))
    }

    fn drop(&self, _store: Store<InstanceState>, result: wasmtime::Result<()>) {
        metrics::instance_released(&self.component);
        match result {
            Ok(()) => tracing::debug!(component = %self.component, "instance released"),
            // Shutdown stopped waiting for this instance, so the runtime drops
            // its worker, and wasmtime-wasi-http reports any worker dropped
            // unfinished as "worker panicked": say what happened instead.
            Err(_) if self.tracked.live().abandoned() => tracing::warn!(
                component = %self.component,
                "instance stopped at shutdown while its guest was still running"
            ),
            Err(error) => {
                tracing::error!(component = %self.component, "instance failed: {error:?}")
            }
        }
    }
}

/// Decides when an instance is done: idle too long (or at all, once the
/// trigger shuts down), or a call overran its deadline while the guest kept
/// the event loop from noticing.
pub struct Expiration {
    request_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    /// Resolves when the trigger shuts down; `None` once it has.
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Expiration {
    fn new(request_timeout: Duration, live: &LiveInstances) -> Self {
        Self {
            request_timeout,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_for: None,
            closing: Some(Box::pin(live.closing())),
        }
    }
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        if let Some(closing) = &mut this.closing
            && closing.as_mut().poll(cx).is_ready()
        {
            this.closing = None;
        }
        // Shutdown waits for the instances: an idle one goes at once, a busy
        // one keeps its deadlines and goes when its guest is done.
        let idle_timeout = if this.closing.is_none() {
            Duration::ZERO
        } else {
            IDLE_INSTANCE_TIMEOUT
        };
        let deadline = since
            + match status {
                WorkerStatus::Idle => idle_timeout,
                WorkerStatus::Requests => this.request_timeout,
                WorkerStatus::PostReturn => POST_RETURN_TIMEOUT,
            };
        if this.armed_for != Some(deadline) {
            this.timer.as_mut().reset(deadline.into());
            this.armed_for = Some(deadline);
        }
        this.timer.as_mut().poll(cx)
    }
}
