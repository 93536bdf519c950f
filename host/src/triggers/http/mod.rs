//! The HTTP trigger: Spin's routes and `spin-*` headers in front of the
//! components' `wasi:http` handlers.
//!
//! `routes` is the pure table, `handler` the instance policy per component,
//! `body_limit` the cap on request bodies (connections and their limits are
//! [`crate::listener`]'s, shared with the ops listener); this file maps
//! outcomes to status codes (no route 404, body too large 413, trap 500,
//! overrun 504; `grpc` says the same in gRPC's terms to gRPC callers). It
//! also serves service-chaining requests in-process, as outbound_http's
//! `LocalDispatch`.

mod body_limit;
mod grpc;
mod handler;
mod live;
pub mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use wasmtime::Engine;
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::handler::{ExpirationError, ProxyHandler, TrapOrPanicError};

use super::Admissions;
use super::admission::Admission;
use crate::capabilities::AppCapabilities;
use crate::capabilities::outbound_http::{LocalDispatch, LocalTarget};
use crate::engine::LoadedComponent;
use crate::listener::{self, ConnectionLimits};
use crate::manifest::{App, HttpRoute};
use crate::metrics::RouteMetrics;
use crate::telemetry;
use handler::{CallData, ComponentInstances};
use live::LiveInstances;
use routes::{Route, RouteMatch, Router};
use tracing::Instrument;

/// Spin's health path, answered by the host itself.
const HEALTH_PATH: &str = "/.well-known/spin/health";

/// Spin's per-request headers (the per-route ones are in `Route`).
const SPIN_FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
const SPIN_PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
const SPIN_CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");

/// `spin-client-addr` of a chained request, which has no network peer.
const CHAINED_CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// What an overloaded component's callers are told to wait, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// Routes HTTP requests to the app's components.
pub struct HttpTrigger {
    router: Router,
    components: HashMap<String, HttpComponent>,
    /// Kept to build the instances of a component deployed while running.
    engine: Engine,
    capabilities: Arc<AppCapabilities>,
    /// Every component's instances, so shutdown can wait for them.
    live: LiveInstances,
}

/// One HTTP-triggered component: who may call it now, and its instances.
struct HttpComponent {
    admission: Arc<Admission>,
    /// Request bodies longer than this get 413; see `body_limit`.
    max_request_body: u64,
    /// Swapped whole by a deploy; a call takes the current one at its start,
    /// so calls already running finish on the version they began with.
    handler: ArcSwap<ProxyHandler<ComponentInstances>>,
}

impl HttpTrigger {
    /// Builds the route table for the loaded components; routes of components
    /// that are not loaded (not selected with `-c`) are left out.
    pub fn new(
        app: &App,
        engine: &Engine,
        capabilities: &Arc<AppCapabilities>,
        components: &[LoadedComponent],
        admissions: &Admissions,
    ) -> anyhow::Result<Self> {
        let mut components_by_id = HashMap::new();
        let mut routes = Vec::new();
        let live = LiveInstances::new();
        for trigger in &app.http_triggers {
            let Some(loaded) = components.iter().find(|c| c.config.id == trigger.component) else {
                continue;
            };
            if !components_by_id.contains_key(&trigger.component) {
                let instances = ComponentInstances::new(engine, capabilities, loaded, &live)?;
                let admission = admissions.get(&trigger.component).cloned().ok_or_else(|| {
                    anyhow::anyhow!("component `{}` has no admission control", trigger.component)
                })?;
                let max_request_body = loaded
                    .config
                    .spindle
                    .max_request_body
                    .unwrap_or(body_limit::DEFAULT_MAX_REQUEST_BODY);
                let component = HttpComponent {
                    admission,
                    max_request_body,
                    handler: ArcSwap::from_pointee(ProxyHandler::new(instances)),
                };
                components_by_id.insert(trigger.component.clone(), component);
            }
            if let HttpRoute::Route(route) = &trigger.route {
                routes.push(Route::new(&app.http_base, route, &trigger.component));
            }
        }
        Ok(Self {
            router: Router::new(routes),
            components: components_by_id,
            engine: engine.clone(),
            capabilities: capabilities.clone(),
            live,
        })
    }

    /// Whether `id` is one of the HTTP components this host runs.
    pub fn serves(&self, id: &str) -> bool {
        self.components.contains_key(id)
    }

    /// Swaps in a new version of a running component: new calls go to it,
    /// calls already running finish on the old one. A version that does not
    /// export an HTTP handler is refused and the old one keeps serving.
    pub fn replace(&self, loaded: &LoadedComponent) -> anyhow::Result<()> {
        let id = &loaded.config.id;
        let Some(component) = self.components.get(id) else {
            anyhow::bail!("component `{id}` is not served by this host's HTTP trigger");
        };
        let instances =
            ComponentInstances::new(&self.engine, &self.capabilities, loaded, &self.live)?;
        component
            .handler
            .store(Arc::new(ProxyHandler::new(instances)));
        Ok(())
    }

    /// The public routes, most specific first.
    pub fn routes(&self) -> &[Route] {
        self.router.routes()
    }

    /// Serves connections from `listener` until `shutdown` resolves, then
    /// stops accepting, lets in-flight requests finish and waits for the
    /// instances to be let go.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        limits: ConnectionLimits,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let service_for = |client: SocketAddr| {
            let trigger = self.clone();
            hyper::service::service_fn(move |request| {
                let trigger = trigger.clone();
                async move { Ok::<_, Infallible>(trigger.handle(request, client).await) }
            })
        };
        listener::serve("app", listener, limits, service_for, shutdown).await?;
        // Every response is sent, but a guest may still be working after its
        // answer; unwaited, its instance would be dropped with the runtime.
        if !self.live.close(live::CLOSE_GRACE).await {
            tracing::warn!(
                instances = self.live.count(),
                "instances still running {:?} after shutdown began; exiting",
                live::CLOSE_GRACE
            );
        }
        Ok(())
    }

    async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<WasiBody> {
        // A `Uri` clone shares its bytes: the path is borrowed, not copied.
        let uri = request.uri().clone();
        let path = uri.path();
        if path == HEALTH_PATH {
            return text_response(StatusCode::OK, "OK");
        }
        let grpc = grpc::Call::of(request.headers());
        if grpc.is_some() && !grpc::carried_by(request.version()) {
            return grpc::http1_refused();
        }
        let Some(matched) = self.router.route(path) else {
            unrouted_metrics().record(StatusCode::NOT_FOUND.as_u16(), Duration::ZERO);
            return refusal(StatusCode::NOT_FOUND, grpc);
        };
        let request =
            request.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        self.call(&matched, request, client, grpc).await
    }

    /// Runs `request` through the component of `matched`, mapping failures
    /// to status codes (to gRPC statuses for a gRPC `call`); shared by
    /// inbound and chained requests.
    async fn call(
        &self,
        matched: &RouteMatch<'_>,
        request: Request<WasiBody>,
        client: SocketAddr,
        grpc: Option<grpc::Call>,
    ) -> Response<WasiBody> {
        let started = Instant::now();
        let span = server_span(matched, &request);
        let response = self
            .call_component(matched, request, client, grpc)
            .instrument(span.clone())
            .await;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        matched.route.metrics.record(status, started.elapsed());
        response
    }

    async fn call_component(
        &self,
        matched: &RouteMatch<'_>,
        request: Request<WasiBody>,
        client: SocketAddr,
        grpc: Option<grpc::Call>,
    ) -> Response<WasiBody> {
        let uri = request.uri().clone();
        let path = uri.path();
        let Some(component) = self.components.get(&matched.route.component) else {
            return refusal(StatusCode::NOT_FOUND, grpc);
        };
        // Refused before it takes an admission slot or an instance.
        if body_limit::declared_over(request.headers(), component.max_request_body) {
            tracing::debug!(component = %matched.route.component, %path, "request body over max_request_body");
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, grpc);
        }
        let Ok(_running) = component.admission.admit().await else {
            tracing::debug!(component = %matched.route.component, %path, "overloaded: turned away");
            return refusal(StatusCode::SERVICE_UNAVAILABLE, grpc);
        };
        let handler = component.handler.load_full();
        let request = match guest_request(request, matched, client) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!("bad request: {error:#}");
                return refusal(StatusCode::BAD_REQUEST, grpc);
            }
        };
        let (parts, body) = request.into_parts();
        let (body, overrun) = body_limit::limit(body, component.max_request_body);
        let request = Request::from_parts(parts, body);
        let span = if telemetry::traces_on() {
            let id = handler.state().id();
            tracing::info_span!("component.call", otel.name = %format!("call {id}"), component = %id)
        } else {
            tracing::Span::none()
        };
        // The instance policy holds the call's deadline (see `handler`), so
        // no second timer runs here.
        let timeout = grpc::Call::deadline(grpc, handler.state().request_timeout());
        let called = Instant::now();
        let call = CallData {
            span: span.clone(),
            timeout,
        };
        let outcome = handler.handle(call, request).instrument(span).await;
        // The guest's read of the body failed before it answered: whatever
        // it made of that (an error, a trap), the cause is the body's size.
        if overrun.happened() {
            tracing::debug!(component = %handler.state().id(), %path, "request body cut off at max_request_body");
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, grpc);
        }
        match outcome {
            Ok(response) => response,
            Err(error) if timed_out(&error, called, timeout) => {
                tracing::warn!(component = %handler.state().id(), %path, "request timed out");
                refusal(StatusCode::GATEWAY_TIMEOUT, grpc)
            }
            Err(error) => {
                tracing::error!(component = %handler.state().id(), %path, "request failed: {error:?}");
                refusal(StatusCode::INTERNAL_SERVER_ERROR, grpc)
            }
        }
    }
}

/// Whether a failed call ran out of time: its own deadline fired, or the
/// instance was expired with it (a guest that never yields keeps the
/// per-request deadline from being polled; the instance's is checked from
/// outside, and the call then only learns that its instance went away).
fn timed_out(error: &wasmtime::Error, called: Instant, timeout: Duration) -> bool {
    error.is::<ExpirationError>() || (error.is::<TrapOrPanicError>() && called.elapsed() >= timeout)
}

/// The request's server span, continuing the caller's trace; none when
/// traces are off.
fn server_span(matched: &RouteMatch<'_>, request: &Request<WasiBody>) -> tracing::Span {
    if !telemetry::traces_on() {
        return tracing::Span::none();
    }
    let method = request.method();
    let route = &matched.route.raw;
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    telemetry::continue_trace(&span, headers);
    span
}

/// Where requests that match no route are counted.
fn unrouted_metrics() -> &'static RouteMetrics {
    static UNROUTED: OnceLock<RouteMetrics> = OnceLock::new();
    UNROUTED.get_or_init(|| RouteMetrics::new("", ""))
}

/// Service chaining: requests a component sends to `http://self` or
/// `http://<id>.spin.internal` arrive here without touching the network.
/// Each is a request of its own, so a component calling itself is served
/// like any other caller and does not wait on itself.
impl LocalDispatch for HttpTrigger {
    fn dispatch(
        &self,
        target: LocalTarget,
        request: Request<WasiBody>,
    ) -> BoxFuture<'_, wasmtime_wasi_http::Result<Response<WasiBody>>> {
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let component_router;
            let router = match &target {
                LocalTarget::App => &self.router,
                LocalTarget::Component(id) => {
                    if !self.components.contains_key(id) {
                        return Err(wasmtime_wasi_http::Error::DestinationNotFound);
                    }
                    // Spin gives a chained request the synthetic route `/...`,
                    // so the whole path arrives as `spin-path-info`.
                    component_router = Router::new([Route::new("/", "/...", id)]);
                    &component_router
                }
            };
            let grpc = grpc::Call::of(request.headers());
            match router.route(&path) {
                Some(matched) => Ok(self.call(&matched, request, CHAINED_CLIENT, grpc).await),
                None => Ok(refusal(StatusCode::NOT_FOUND, grpc)),
            }
        })
    }
}

/// The request as the guest sees it: an absolute URI and Spin's headers.
fn guest_request(
    request: Request<WasiBody>,
    matched: &RouteMatch<'_>,
    client: SocketAddr,
) -> anyhow::Result<Request<WasiBody>> {
    let (mut parts, body) = request.into_parts();
    // Reuse the request's own path bytes; only scheme and authority are added.
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if uri.authority.is_none() {
        let host = parts
            .headers
            .get(http::header::HOST)
            .context("request has neither an absolute URI nor a Host header")?;
        uri.authority = Some(Authority::try_from(host.as_bytes())?);
    }
    uri.scheme = Some(Scheme::HTTP);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri)?;

    let headers = &mut parts.headers;
    headers.insert(
        SPIN_FULL_URL,
        HeaderValue::from_str(&parts.uri.to_string())?,
    );
    headers.insert(SPIN_PATH_INFO, HeaderValue::from_str(&matched.path_info)?);
    for (name, value) in &matched.route.constant_headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(
        SPIN_CLIENT_ADDR,
        HeaderValue::from_str(&client.to_string())?,
    );
    for (name, value) in &matched.params {
        headers.insert(path_match_header(name)?, HeaderValue::from_str(value)?);
    }
    Ok(Request::from_parts(parts, body))
}

/// The header carrying a `:name` segment, named as Spin names it: `_` in
/// the parameter's name becomes `-` (`:path_end` → `spin-path-match-path-end`).
fn path_match_header(name: &str) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let name = name.replace('_', "-").to_ascii_lowercase();
    HeaderName::from_bytes(format!("spin-path-match-{name}").as_bytes())
}

/// What the host answers itself with `status`: to a gRPC call, the gRPC
/// status that means the same.
fn refusal(status: StatusCode, grpc: Option<grpc::Call>) -> Response<WasiBody> {
    match (grpc, status) {
        (Some(_), status) => grpc::status_response(grpc::code_for(status)),
        (None, StatusCode::SERVICE_UNAVAILABLE) => overloaded_response(),
        (None, status) => empty_response(status),
    }
}

fn empty_response(status: StatusCode) -> Response<WasiBody> {
    let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// `503` with `Retry-After`: the component is at its limit, try again soon.
fn overloaded_response() -> Response<WasiBody> {
    let mut response = empty_response(StatusCode::SERVICE_UNAVAILABLE);
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<WasiBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}
