//! Outbound `wasi:http` (`wasi:http/client@0.3.0` and
//! `wasi:http/outgoing-handler@0.2`), granted by a component's
//! `allowed_outbound_hosts`. No runtime-config key: the network is the backend.
//!
//! Both WASI versions reach the host through one hook,
//! [`WasiHttpHooks::send_request`], which [`InstanceState`] implements: a
//! denied destination gets `HttpRequestDenied` (never a trap); `http://self`
//! and `http://<component>.spin.internal` are served in-process by the HTTP
//! trigger, registered as a [`LocalDispatch`] once built (service chaining,
//! as in Spin); a host whose entry is `http+h2c://` gets HTTP/2 with prior
//! knowledge ([`h2c`]); everything else goes to wasmtime's
//! `default_send_request` (HTTP/1.1). Either way the request goes through
//! [`resilience`]: a timeout, retries and a circuit breaker per destination.

mod h2c;
mod resilience;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::allowed_hosts::{AllowedHosts, SELF_HOST};
use crate::engine;
use crate::manifest::{App, RuntimeConfig};
use crate::metrics;
use crate::telemetry;
use resilience::{Breaker, Policy, Replay, ReplayableRequest, Resilience};

/// `http://<component-id>.spin.internal` addresses one component of the app.
pub const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// What `send_request` answers with: a response and the future that drives
/// its I/O, as wasmtime-wasi-http expects.
type SendResult = wasmtime_wasi_http::Result<(
    Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// Per-app state: every component's allow-list and the in-process dispatcher.
pub struct AppState {
    /// Per component: its rendered and parsed `allowed_outbound_hosts`.
    components: HashMap<String, Arc<AllowedHosts>>,
    /// Filled by the HTTP trigger once it exists; see [`LocalDispatch`].
    local: LocalDispatcher,
    /// Timeouts, retries and breakers.
    resilience: Arc<Resilience>,
    /// HTTP/2 connections to `http+h2c` hosts, shared by every instance.
    h2c: Arc<h2c::Connections>,
}

impl AppState {
    /// Renders each component's `allowed_outbound_hosts` templates with the
    /// app's variables and parses them; fails naming the component and entry.
    pub fn configure(
        app: &App,
        runtime_config: &RuntimeConfig,
        allowed_hosts: &crate::capabilities::allowed_hosts::ByComponent,
    ) -> Self {
        Self {
            components: allowed_hosts.clone(),
            local: LocalDispatcher::default(),
            resilience: Arc::new(Resilience::configure(app, runtime_config)),
            h2c: Arc::default(),
        }
    }

    /// Makes `dispatch` serve service-chaining requests from now on. Held
    /// weakly: the dispatcher (the HTTP trigger) owns these capabilities.
    pub fn set_local_dispatch(&self, dispatch: &Arc<impl LocalDispatch + 'static>) {
        let weak = Arc::downgrade(dispatch);
        if self.local.0.set(weak).is_err() {
            tracing::warn!("a local HTTP dispatcher was already registered; keeping the first");
        }
    }

    /// The state one instance of `component` gets; cheap (shared, not copied).
    pub fn instance_state(&self, component: &str) -> InstanceState {
        InstanceState {
            component: component.into(),
            allowed: self.components.get(component).cloned().unwrap_or_default(),
            local: self.local.clone(),
            resilience: self.resilience.clone(),
            h2c: self.h2c.clone(),
            call_span: tracing::Span::none(),
        }
    }
}

/// One instance's outbound policy; it is the `wasi:http` hooks of the store.
pub struct InstanceState {
    /// The calling component, for logs.
    component: Arc<str>,
    /// Where it may send requests.
    allowed: Arc<AllowedHosts>,
    /// Where chained requests go.
    local: LocalDispatcher,
    /// Timeouts, retries and breakers.
    resilience: Arc<Resilience>,
    /// HTTP/2 connections to `http+h2c` hosts.
    h2c: Arc<h2c::Connections>,
    /// The running call's span, parent of each request's.
    pub(crate) call_span: tracing::Span,
}

/// Nothing to link: `engine` links `wasi:http` in both versions, and this
/// capability takes part through [`InstanceState`] as their hooks.
pub fn add_to_linker(_linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    Ok(())
}

impl WasiHttpHooks for InstanceState {
    fn send_request(
        &mut self,
        mut request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_result: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        // Only the host: the URL may carry credentials or secrets in its query.
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let method = request.method().clone();
        let span = crate::capability_span!(
            self.call_span,
            "outbound_http.request",
            otel.name = %method,
            otel.kind = "client",
            http.request.method = %method,
            server.address = %host,
            network.protocol.version = tracing::field::Empty,
            spindle.breaker = tracing::field::Empty,
        );
        // The callee continues this trace (W3C trace context).
        if let Some(traceparent) = telemetry::traceparent(&span)
            && let Ok(value) = http::HeaderValue::from_str(&traceparent)
        {
            request.headers_mut().insert("traceparent", value);
        }
        let destination = Destination::of(&host);
        let scheme = request.uri().scheme_str().unwrap_or("http").to_string();
        let scheme = scheme.as_str();
        let port = request.uri().port_u16();
        if !self.allowed.allows(scheme, &host, port) {
            span.in_scope(|| {
                tracing::warn!(
                    component = %self.component,
                    "outbound request to {scheme}://{host}{} denied: not in allowed_outbound_hosts",
                    port.map(|port| format!(":{port}")).unwrap_or_default(),
                )
            });
            discard_body(request.into_body());
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // An `http+h2c` entry: HTTP/2 to the network, and a chained callee
        // gets the request as HTTP/2, as if it had come in over h2c.
        let h2c = self.allowed.wants_h2c(scheme, &host, port);
        if h2c {
            *request.version_mut() = Version::HTTP_2;
            span.record("network.protocol.version", "2");
        }
        let target = format!(
            "{scheme}://{host}{}",
            port.map(|port| format!(":{port}")).unwrap_or_default()
        );
        let policy = self.resilience.policy(&self.component, &host);
        let breaker = self.resilience.breaker(&self.component, &target, &policy);
        let outcomes = Outcomes {
            component: self.component.to_string(),
            destination: target,
        };
        let local = self.local.clone();
        let connections = self.h2c.clone();
        let send = move |request: Request<WasiBody>| -> BoxFuture<'static, SendResult> {
            let local = local.clone();
            match &destination {
                Destination::Network if h2c => {
                    let connections = connections.clone();
                    Box::pin(async move { h2c::send(&connections, request, options).await })
                }
                Destination::Network => Box::pin(send_over_network(request, options)),
                Destination::Local(target) => {
                    let target = target.clone();
                    Box::pin(async move {
                        let response = local.dispatch(target, request).await?;
                        Ok((response, no_io()))
                    })
                }
            }
        };
        let call = send_with_policy(request, policy, breaker, outcomes, span.clone(), send);
        Box::new(call.instrument(span))
    }
}

/// Reads and drops a denied request's body in the background, so a guest
/// that writes its body before awaiting the response (spin-sdk's `send`
/// does) still sees `HttpRequestDenied` from the response, as in Spin,
/// instead of a closed stream. It ends when the guest finishes or drops the
/// body, at the latest with the guest's instance.
fn discard_body(mut body: WasiBody) {
    tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
}

/// Counts attempts by outcome for one component and destination.
struct Outcomes {
    component: String,
    destination: String,
}

impl Outcomes {
    fn count(&self, outcome: &'static str) {
        metrics::metrics()
            .outbound_requests
            .get_or_create(&metrics::OutboundLabels {
                component: self.component.clone(),
                destination: self.destination.clone(),
                outcome,
            })
            .inc();
    }
}

/// Sends `request` under `policy`: retried while that is safe and useful,
/// each attempt under the timeout and through the breaker.
async fn send_with_policy(
    request: Request<WasiBody>,
    policy: Policy,
    breaker: Arc<Breaker>,
    outcomes: Outcomes,
    span: tracing::Span,
    send: impl Fn(Request<WasiBody>) -> BoxFuture<'static, SendResult>,
) -> SendResult {
    if policy.retries == 0 || !(resilience::is_retryable(&request) || resilience::is_grpc(&request))
    {
        return attempt(send(request), policy.timeout, &breaker, &outcomes, &span).await;
    }
    // Read the body once, so that each attempt sends the same bytes.
    let request = match ReplayableRequest::read(request).await? {
        Replay::Replayable(request) => request,
        Replay::Once(request) => {
            tracing::debug!(
                "request body over {} bytes: streamed once, not retried",
                resilience::MAX_REPLAY_BODY
            );
            return attempt(send(request), policy.timeout, &breaker, &outcomes, &span).await;
        }
    };
    let mut retry = 0;
    loop {
        let outcome = attempt(
            send(request.copy()),
            policy.timeout,
            &breaker,
            &outcomes,
            &span,
        )
        .await;
        let worth_another = match &outcome {
            Ok((response, _)) => {
                resilience::is_retryable_response(response.status(), response.headers())
            }
            // An open breaker stays open for longer than a backoff.
            Err(wasmtime_wasi_http::Error::DestinationUnavailable) => false,
            Err(_) => true,
        };
        if retry >= policy.retries || !worth_another {
            return outcome;
        }
        retry += 1;
        outcomes.count("retried");
        tokio::time::sleep(resilience::backoff(retry)).await;
    }
}

/// One attempt: refused at once by an open breaker; otherwise sent, timed
/// and its outcome counted (a 5xx answer or a gRPC UNAVAILABLE counts as a
/// failure).
async fn attempt(
    sent: BoxFuture<'static, SendResult>,
    timeout: Duration,
    breaker: &Breaker,
    outcomes: &Outcomes,
    span: &tracing::Span,
) -> SendResult {
    let call = match breaker.admit() {
        Ok(call) => call,
        Err(open) => {
            span.record("spindle.breaker", "open");
            outcomes.count("refused_open");
            tracing::debug!(destination = %open.destination, "circuit open: failing fast");
            return Err(wasmtime_wasi_http::Error::DestinationUnavailable);
        }
    };
    let outcome = match tokio::time::timeout(timeout, sent).await {
        Ok(Ok((response, io))) => {
            let ok = !resilience::is_failed_response(response.status(), response.headers());
            call.record(ok);
            outcomes.count(if ok { "ok" } else { "failed" });
            Ok((response, io))
        }
        Ok(Err(error)) => {
            call.record(false);
            outcomes.count("failed");
            Err(error)
        }
        Err(_) => {
            call.record(false);
            outcomes.count("timed_out");
            Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)
        }
    };
    span.record("spindle.breaker", breaker.state_name());
    outcome
}

/// Where a request goes, decided by its host alone.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// A real network peer.
    Network,
    /// This app, in-process.
    Local(LocalTarget),
}

impl Destination {
    /// `host` is lowercase, without port.
    fn of(host: &str) -> Self {
        if host == SELF_HOST {
            return Self::Local(LocalTarget::App);
        }
        match host.strip_suffix(SERVICE_CHAINING_SUFFIX) {
            // One label only: `a.b.spin.internal` names no component.
            Some(component) if !component.is_empty() && !component.contains('.') => {
                Self::Local(LocalTarget::Component(component.to_string()))
            }
            _ => Self::Network,
        }
    }
}

async fn send_over_network(
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
    let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(io);
    Ok((response.map(BodyExt::boxed_unsync), io))
}

/// A chained response's body is driven by the callee's instance, not by us.
fn no_io() -> Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> {
    Box::new(async { Ok(()) })
}

/// The app component a chained request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTarget {
    /// `http://self/...`: the app, routed by path like an inbound request.
    App,
    /// `http://<id>.spin.internal/...`: that component, whatever the path.
    Component(String),
}

/// Serves requests addressed to the app itself without a network hop. The
/// HTTP trigger implements it, since it owns the routes and the instances.
pub trait LocalDispatch: Send + Sync {
    /// Runs `request` through `target` and returns its response. A target
    /// that does not exist is `DestinationNotFound`; a path no route matches
    /// is a 404 response, as over the network.
    fn dispatch(
        &self,
        target: LocalTarget,
        request: Request<WasiBody>,
    ) -> BoxFuture<'_, wasmtime_wasi_http::Result<Response<WasiBody>>>;
}

/// The registration slot for the [`LocalDispatch`], shared by every instance.
#[derive(Clone, Default)]
struct LocalDispatcher(Arc<OnceLock<Weak<dyn LocalDispatch>>>);

impl LocalDispatcher {
    async fn dispatch(
        &self,
        target: LocalTarget,
        request: Request<WasiBody>,
    ) -> wasmtime_wasi_http::Result<Response<WasiBody>> {
        // No HTTP trigger (a NATS-only app), or it is shutting down.
        let Some(dispatch) = self.0.get().and_then(Weak::upgrade) else {
            return Err(wasmtime_wasi_http::Error::DestinationNotFound);
        };
        dispatch.dispatch(target, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::HostSettings;
    use crate::manifest;
    use bytes::Bytes;
    use futures::StreamExt;
    use http_body_util::{Empty, StreamBody};
    use hyper::body::Frame;
    use std::path::Path;
    use std::sync::Mutex;

    #[test]
    fn destination_is_decided_by_the_host() {
        assert_eq!(
            Destination::of("self"),
            Destination::Local(LocalTarget::App)
        );
        assert_eq!(
            Destination::of("orders.spin.internal"),
            Destination::Local(LocalTarget::Component("orders".into()))
        );
        assert_eq!(Destination::of("a.b.spin.internal"), Destination::Network);
        assert_eq!(Destination::of("spin.internal"), Destination::Network);
        assert_eq!(Destination::of("example.com"), Destination::Network);
    }

    fn app_state(allowed_outbound_hosts: &str, variables: &str) -> AppState {
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n{variables}\n\
             [component.a]\nsource = \"a.wasm\"\nallowed_outbound_hosts = {allowed_outbound_hosts}\n"
        );
        let app = manifest::parse(&text, Path::new("/nonexistent/spin.toml")).expect("manifest");
        let variables = crate::capabilities::variables::AppState::configure(
            &app,
            &[],
            &HostSettings::default(),
        )
        .expect("variables");
        let allowed_hosts =
            crate::capabilities::allowed_hosts::render_all(&app, &variables).expect("allow-lists");
        AppState::configure(&app, &RuntimeConfig::default(), &allowed_hosts)
    }

    #[test]
    fn templates_are_rendered_at_configure_time() {
        let state = app_state(
            "[\"https://{{ api_host }}:{{ api_port }}\"]",
            "[variables]\napi_host = { default = \"api.example.com\" }\n\
             api_port = { default = \"8443\" }",
        );
        let instance = state.instance_state("a");
        assert!(
            instance
                .allowed
                .allows("https", "api.example.com", Some(8443))
        );
        assert!(!instance.allowed.allows("https", "api.example.com", None));
    }

    #[test]
    fn bad_entry_stops_configure_naming_component_and_entry() {
        let text = "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
                    [component.a]\nsource = \"a.wasm\"\n\
                    allowed_outbound_hosts = [\"https://example.com/path\"]\n";
        let app = manifest::parse(text, Path::new("/nonexistent/spin.toml")).expect("manifest");
        let variables = crate::capabilities::variables::AppState::configure(
            &app,
            &[],
            &HostSettings::default(),
        )
        .expect("variables");
        let error = format!(
            "{:#}",
            crate::capabilities::allowed_hosts::render_all(&app, &variables).expect_err("fails")
        );
        assert!(error.contains("[component.a]"), "{error}");
        assert!(error.contains("https://example.com/path"), "{error}");
    }

    fn get(url: &str) -> Request<WasiBody> {
        let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
        Request::get(url).body(body).expect("valid request")
    }

    async fn send(instance: &mut InstanceState, url: &str) -> wasmtime_wasi_http::Result<u16> {
        let future = instance.send_request(get(url), None, no_io());
        let (response, _io) = Box::into_pin(future).await?;
        Ok(response.status().as_u16())
    }

    #[tokio::test]
    async fn denied_host_gets_http_request_denied() {
        let mut instance = app_state("[\"https://example.com\"]", "").instance_state("a");
        let result = send(&mut instance, "http://127.0.0.1:9/secret?token=x").await;
        assert!(
            matches!(result, Err(wasmtime_wasi_http::Error::HttpRequestDenied)),
            "{result:?}"
        );
    }

    /// Records what it was asked to dispatch (and over which HTTP version
    /// it came) and answers 204.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(LocalTarget, String)>>, Mutex<Vec<Version>>);

    impl LocalDispatch for Recorder {
        fn dispatch(
            &self,
            target: LocalTarget,
            request: Request<WasiBody>,
        ) -> BoxFuture<'_, wasmtime_wasi_http::Result<Response<WasiBody>>> {
            let path = request.uri().path().to_string();
            self.0.lock().expect("not poisoned").push((target, path));
            self.1.lock().expect("not poisoned").push(request.version());
            Box::pin(async {
                let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
                let mut response = Response::new(body);
                *response.status_mut() = http::StatusCode::NO_CONTENT;
                Ok(response)
            })
        }
    }

    #[tokio::test]
    async fn chained_requests_go_to_the_local_dispatcher() {
        let state = app_state("[\"http://*.spin.internal\", \"http://self\"]", "");
        let recorder = Arc::new(Recorder::default());
        state.set_local_dispatch(&recorder);
        let mut instance = state.instance_state("a");

        assert_eq!(
            send(&mut instance, "http://b.spin.internal/x").await.ok(),
            Some(204)
        );
        assert_eq!(
            send(&mut instance, "http://self/y?q=1").await.ok(),
            Some(204)
        );

        let seen = recorder.0.lock().expect("not poisoned").clone();
        assert_eq!(
            seen,
            vec![
                (LocalTarget::Component("b".into()), "/x".into()),
                (LocalTarget::App, "/y".into()),
            ]
        );
    }

    #[tokio::test]
    async fn chained_requests_under_an_h2c_entry_arrive_as_http2() {
        let state = app_state(
            "[\"http+h2c://grpc.spin.internal\", \"http://rest.spin.internal\"]",
            "",
        );
        let recorder = Arc::new(Recorder::default());
        state.set_local_dispatch(&recorder);
        let mut instance = state.instance_state("a");

        for url in ["http://grpc.spin.internal/", "http://rest.spin.internal/"] {
            assert_eq!(send(&mut instance, url).await.ok(), Some(204), "{url}");
        }

        let versions = recorder.1.lock().expect("not poisoned").clone();
        assert_eq!(versions, [Version::HTTP_2, Version::HTTP_11]);
    }

    /// An HTTP/2-only (h2c) server on 127.0.0.1 answering
    /// `<version> <path>` with a `grpc-status: 0` trailer; its address and
    /// how many connections it accepted.
    async fn h2c_upstream() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("its address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let text = format!("{:?} {}", request.version(), request.uri().path());
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let frames = [Frame::data(Bytes::from(text)), Frame::trailers(trailers)];
                        let body = StreamBody::new(futures::stream::iter(
                            frames.map(Ok::<_, std::convert::Infallible>),
                        ));
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn h2c_entry_speaks_http2_with_trailers_over_one_connection() {
        let (address, accepted) = h2c_upstream().await;
        let state = app_state(&format!("[\"http+h2c://{address}\"]"), "");
        let mut instance = state.instance_state("a");

        for path in ["/first", "/second"] {
            let future =
                instance.send_request(get(&format!("http://{address}{path}")), None, no_io());
            let (response, _io) = Box::into_pin(future).await.expect("an answer");
            assert_eq!(response.version(), Version::HTTP_2);
            let body = response.into_body().collect().await.expect("the body");
            let trailers = body.trailers().cloned().expect("trailers");
            assert_eq!(body.to_bytes(), format!("HTTP/2.0 {path}").as_bytes());
            assert_eq!(trailers["grpc-status"], "0");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "both calls share one connection"
        );
    }

    #[tokio::test]
    async fn h2c_to_a_closed_port_is_a_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("its address");
        drop(listener);
        let state = app_state(&format!("[\"http+h2c://{address}\"]"), "");
        let mut instance = state.instance_state("a");
        let result = send(&mut instance, &format!("http://{address}/")).await;
        assert!(
            matches!(result, Err(wasmtime_wasi_http::Error::Connect(_))),
            "{result:?}"
        );
    }

    /// A 2 MiB body whose last chunk comes only when `last` is sent.
    fn large_body_held_open() -> (WasiBody, tokio::sync::oneshot::Sender<()>, usize) {
        const CHUNK: usize = 64 << 10;
        let chunks = 2 * resilience::MAX_REPLAY_BODY as usize / CHUNK;
        let (last, release) = tokio::sync::oneshot::channel::<()>();
        let first = futures::stream::iter(
            (0..chunks - 1).map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK])))),
        );
        let rest = futures::stream::once(async move {
            let _ = release.await;
            Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK])))
        });
        let body = StreamBody::new(first.chain(rest)).boxed_unsync();
        (body, last, chunks * CHUNK)
    }

    #[tokio::test]
    async fn a_body_over_the_replay_cap_is_streamed_once_and_not_retried() {
        let state = app_state("[\"http://upstream.test\"]", "");
        let policy = Policy {
            timeout: Duration::from_secs(10),
            retries: 2,
            breaker_failures: 100,
            breaker_cooldown: Duration::from_secs(1),
        };
        let breaker = state
            .resilience
            .breaker("a", "http://upstream.test", &policy);
        let outcomes = Outcomes {
            component: "a".into(),
            destination: "http://upstream.test".into(),
        };
        let (body, last, length) = large_body_held_open();
        let request = Request::post("http://upstream.test/")
            .header("idempotency-key", "k")
            .body(body)
            .expect("valid request");
        let sent = Arc::new(tokio::sync::Notify::new());
        let delivered = Arc::new(Mutex::new(Vec::new()));
        // The upstream reads the whole body and answers 503, worth a retry.
        let send = {
            let (sent, delivered) = (sent.clone(), delivered.clone());
            move |request: Request<WasiBody>| -> BoxFuture<'static, SendResult> {
                sent.notify_one();
                let delivered = delivered.clone();
                Box::pin(async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    delivered.lock().expect("not poisoned").push(body.len());
                    let mut response =
                        Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
                    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    Ok((response, no_io()))
                })
            }
        };
        let call = tokio::spawn(send_with_policy(
            request,
            policy,
            breaker,
            outcomes,
            tracing::Span::none(),
            send,
        ));

        // Sent while the guest is still writing: not read into memory first.
        tokio::time::timeout(Duration::from_secs(5), sent.notified())
            .await
            .expect("the request went out before its body ended");
        last.send(()).expect("the body is still being read");
        let (response, _io) = call.await.expect("the call").expect("an answer");
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            *delivered.lock().expect("not poisoned"),
            vec![length],
            "delivered whole, once"
        );
    }

    #[tokio::test]
    async fn chaining_without_an_http_trigger_finds_no_destination() {
        let mut instance = app_state("[\"http://self\"]", "").instance_state("a");
        let result = send(&mut instance, "http://self/").await;
        assert!(
            matches!(result, Err(wasmtime_wasi_http::Error::DestinationNotFound)),
            "{result:?}"
        );
    }
}
