//! Outbound `wasi:http` (`wasi:http/client@0.3.0` and
//! `wasi:http/outgoing-handler@0.2`), granted by a component's
//! `allowed_outbound_hosts`. No runtime-config key: the network is the backend.
//!
//! Both WASI versions reach the host through one hook,
//! [`WasiHttpHooks::send_request`], which [`InstanceState`] implements: a
//! denied destination gets `HttpRequestDenied` (never a trap); `http://self`
//! and `http://<component>.spin.internal` are served in-process by the HTTP
//! trigger, registered as a [`LocalDispatch`] once built (service chaining,
//! as in Spin); everything else goes to wasmtime's `default_send_request`.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, OnceLock, Weak};

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::variables;
use crate::engine;
use crate::manifest::App;

/// The host name that addresses the app itself (routed by path).
pub const SELF_HOST: &str = "self";

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
}

impl AppState {
    /// Renders each component's `allowed_outbound_hosts` templates with the
    /// app's variables and parses them; fails naming the component and entry.
    pub fn configure(app: &App, variables: &variables::AppState) -> anyhow::Result<Self> {
        let mut components = HashMap::new();
        for component in app.components.values() {
            let allowed = AllowedHosts::render(&component.allowed_outbound_hosts, variables)
                .with_context(|| format!("[component.{}] allowed_outbound_hosts", component.id))?;
            components.insert(component.id.clone(), Arc::new(allowed));
        }
        Ok(Self {
            components,
            local: LocalDispatcher::default(),
        })
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
}

/// Nothing to link: `engine` links `wasi:http` in both versions, and this
/// capability takes part through [`InstanceState`] as their hooks.
pub fn add_to_linker(_linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    Ok(())
}

impl WasiHttpHooks for InstanceState {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_result: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        // Only the host: the URL may carry credentials or secrets in its query.
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let span = tracing::debug_span!(
            "outbound_http.request",
            method = %request.method(),
            host = %host,
        );
        let destination = Destination::of(&host);
        let scheme = request.uri().scheme_str().unwrap_or("http");
        let port = request.uri().port_u16();
        if !self.allowed.allows(scheme, &host, port) {
            span.in_scope(|| {
                tracing::warn!(
                    component = %self.component,
                    "outbound request to {scheme}://{host}{} denied: not in allowed_outbound_hosts",
                    port.map(|port| format!(":{port}")).unwrap_or_default(),
                )
            });
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let local = self.local.clone();
        Box::new(
            async move {
                match destination {
                    Destination::Network => send_over_network(request, options).await,
                    Destination::Local(target) => {
                        let response = local.dispatch(target, request).await?;
                        Ok((response, no_io()))
                    }
                }
            }
            .instrument(span),
        )
    }
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

/// A component's `allowed_outbound_hosts`, parsed: the pure policy that
/// decides whether a `scheme://host:port` may be reached. Spin's syntax and
/// semantics, reusable by any capability that connects somewhere (postgres).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    /// Renders the `{{ var }}` templates of manifest entries and parses them.
    /// An error quotes the entry as written, never its rendered value, which
    /// may hold a secret.
    pub fn render(entries: &[String], variables: &variables::AppState) -> anyhow::Result<Self> {
        entries
            .iter()
            .map(|entry| {
                variables
                    .render(entry)
                    .and_then(|rendered| AllowedHost::parse(&rendered))
                    .with_context(|| format!("\"{entry}\""))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Parses entries without templates; an error quotes the entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                AllowedHost::parse(entry).with_context(|| format!("\"{entry}\""))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Whether `scheme://host[:port]` may be reached; a missing port is the
    /// scheme's default. `host` `self` is the app itself, allowed by a
    /// `self` entry or a `*` host.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = normalize_host(host);
        self.0.iter().any(|entry| entry.allows(scheme, &host, port))
    }
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, each part
/// possibly a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// `None` for `*://`.
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`
    Any,
    /// `*.example.com`, stored as `.example.com`: subdomains only.
    Subdomains(String),
    /// `self`: the app itself.
    ToSelf,
    /// A name or an IP address, normalised.
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    /// `*`
    Any,
    /// One port (`p..=p`), or Spin's `a..b` range.
    Range(RangeInclusive<u16>),
}

impl AllowedHost {
    fn parse(entry: &str) -> anyhow::Result<Self> {
        let entry = entry.trim();
        if entry == "insecure:allow-all" {
            // Spin's older spelling of `*://*:*`.
            return Ok(Self {
                scheme: None,
                host: HostPattern::Any,
                port: PortPattern::Any,
            });
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("needs a scheme, like `https://` or `*://`");
        };
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => bail!("the scheme must be letters or `*`"),
        };
        // A trailing `/` is tolerated; a path is not.
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            bail!("must not have a path; write only scheme://host[:port]");
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => {
                let default = scheme.as_deref().and_then(default_port).with_context(
                    || "has no port and its scheme has no default port; add `:PORT` or `:*`",
                )?;
                PortPattern::Range(default..=default)
            }
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::parse(port)?,
        };
        Ok(Self {
            scheme,
            host: HostPattern::parse(host)?,
            port,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_allowed = self
            .scheme
            .as_deref()
            .is_none_or(|allowed| allowed.eq_ignore_ascii_case(scheme));
        if !scheme_allowed {
            return false;
        }
        if host == SELF_HOST {
            // The app is not reached through a port: only the scheme counts.
            return matches!(self.host, HostPattern::Any | HostPattern::ToSelf);
        }
        let Some(port) = port.or_else(|| default_port(&scheme.to_ascii_lowercase())) else {
            return false;
        };
        self.host.allows(host) && self.port.allows(port)
    }
}

impl HostPattern {
    fn parse(host: &str) -> anyhow::Result<Self> {
        if host.is_empty() {
            bail!("has no host");
        }
        if host == "*" {
            return Ok(Self::Any);
        }
        if host == SELF_HOST {
            return Ok(Self::ToSelf);
        }
        if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                bail!("a wildcard host is `*` or `*.domain`");
            }
            return Ok(Self::Subdomains(format!(".{}", normalize_host(domain))));
        }
        if host.contains('*') {
            bail!("a wildcard host is `*` or `*.domain`");
        }
        Ok(Self::Exact(normalize_host(host)))
    }

    /// `host` is normalised.
    fn allows(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            Self::ToSelf => false,
            Self::Exact(exact) => host == exact,
        }
    }
}

impl PortPattern {
    fn parse(port: &str) -> anyhow::Result<Self> {
        let number = |text: &str| {
            text.parse::<u16>()
                .with_context(|| format!("port `{text}` is not a number from 0 to 65535"))
        };
        match port.split_once("..") {
            Some((start, end)) => {
                let (start, end) = (number(start)?, number(end)?);
                // Spin's `a..b` excludes `b`, like Rust's.
                if end <= start {
                    bail!("port range `{port}` is empty");
                }
                Ok(Self::Range(start..=end - 1))
            }
            None => {
                let port = number(port)?;
                Ok(Self::Range(port..=port))
            }
        }
    }

    fn allows(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::Range(range) => range.contains(&port),
        }
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 address.
fn split_host_port(authority: &str) -> anyhow::Result<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            bail!("an IPv6 address needs its closing `]`");
        };
        return match after {
            "" => Ok((address, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((address, Some(port))),
                None => bail!("unexpected text after the IPv6 address"),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Lowercase names; IP addresses in their canonical form, without brackets,
/// so `[::1]`, `::1` and `0:0::1` compare equal.
fn normalize_host(host: &str) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The port a scheme uses when none is written, as in Spin.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::HostSettings;
    use crate::manifest;
    use http_body_util::Empty;
    use std::path::Path;
    use std::sync::Mutex;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).expect("valid allowed_outbound_hosts")
    }

    fn parse_error(entry: &str) -> String {
        format!(
            "{:#}",
            AllowedHosts::parse(&[entry]).expect_err("must be rejected")
        )
    }

    #[test]
    fn exact_host_allows_only_its_scheme_and_default_port() {
        let hosts = allowed(&["https://example.com"]);
        assert!(hosts.allows("https", "example.com", None));
        assert!(hosts.allows("https", "example.com", Some(443)));
        assert!(!hosts.allows("https", "example.com", Some(8443)));
        assert!(!hosts.allows("http", "example.com", None));
        assert!(!hosts.allows("https", "api.example.com", None));
        assert!(!hosts.allows("https", "example.org", None));
    }

    #[test]
    fn explicit_port_replaces_the_default() {
        let hosts = allowed(&["http://example.com:8080"]);
        assert!(hosts.allows("http", "example.com", Some(8080)));
        assert!(!hosts.allows("http", "example.com", None));
        assert!(!hosts.allows("http", "example.com", Some(80)));
    }

    #[test]
    fn default_port_written_out_still_matches() {
        let hosts = allowed(&["http://example.com"]);
        assert!(hosts.allows("http", "example.com", Some(80)));
    }

    #[test]
    fn wildcard_subdomain_does_not_match_the_bare_domain() {
        let hosts = allowed(&["https://*.example.com"]);
        assert!(hosts.allows("https", "api.example.com", None));
        assert!(hosts.allows("https", "a.b.example.com", None));
        assert!(!hosts.allows("https", "example.com", None));
        assert!(!hosts.allows("https", "badexample.com", None));
    }

    #[test]
    fn wildcard_scheme_and_port_allow_any_scheme_and_port() {
        let hosts = allowed(&["*://example.com:*"]);
        assert!(hosts.allows("http", "example.com", None));
        assert!(hosts.allows("https", "example.com", Some(9000)));
        assert!(hosts.allows("postgres", "example.com", None));
        assert!(!hosts.allows("http", "other.com", None));
    }

    #[test]
    fn localhost_with_any_port() {
        let hosts = allowed(&["http://localhost:*"]);
        assert!(hosts.allows("http", "localhost", Some(3000)));
        assert!(hosts.allows("http", "LOCALHOST", Some(3000)));
        assert!(!hosts.allows("https", "localhost", Some(3000)));
        assert!(!hosts.allows("http", "127.0.0.1", Some(3000)));
    }

    #[test]
    fn ip_addresses_match_in_any_spelling() {
        let hosts = allowed(&["http://127.0.0.1:8080", "http://[::1]:8080"]);
        assert!(hosts.allows("http", "127.0.0.1", Some(8080)));
        assert!(!hosts.allows("http", "127.0.0.1", Some(8081)));
        assert!(hosts.allows("http", "[::1]", Some(8080)));
        assert!(hosts.allows("http", "[0:0::1]", Some(8080)));
    }

    #[test]
    fn everything_wildcard_allows_everything_including_the_app() {
        let hosts = allowed(&["*://*:*"]);
        assert!(hosts.allows("https", "example.com", Some(1)));
        assert!(hosts.allows("http", "b.spin.internal", None));
        assert!(hosts.allows("http", "self", None));
    }

    #[test]
    fn insecure_allow_all_is_everything() {
        let hosts = allowed(&["insecure:allow-all"]);
        assert!(hosts.allows("redis", "cache.internal", Some(6380)));
    }

    #[test]
    fn port_range_excludes_its_end_as_in_spin() {
        let hosts = allowed(&["http://localhost:3000..3002"]);
        assert!(hosts.allows("http", "localhost", Some(3000)));
        assert!(hosts.allows("http", "localhost", Some(3001)));
        assert!(!hosts.allows("http", "localhost", Some(3002)));
    }

    #[test]
    fn self_is_allowed_only_by_self_or_any_host() {
        assert!(allowed(&["http://self"]).allows("http", "self", None));
        assert!(!allowed(&["http://self"]).allows("https", "self", None));
        assert!(allowed(&["http://*:8080"]).allows("http", "self", None));
        assert!(!allowed(&["http://*.spin.internal"]).allows("http", "self", None));
        assert!(!allowed(&["http://example.com"]).allows("http", "self", None));
    }

    #[test]
    fn service_chaining_needs_its_host_listed() {
        let any = allowed(&["http://*.spin.internal"]);
        assert!(any.allows("http", "b.spin.internal", None));
        let one = allowed(&["http://b.spin.internal"]);
        assert!(one.allows("http", "b.spin.internal", None));
        assert!(!one.allows("http", "c.spin.internal", None));
        assert!(!allowed(&["http://self"]).allows("http", "b.spin.internal", None));
    }

    #[test]
    fn nothing_listed_allows_nothing() {
        let hosts = AllowedHosts::default();
        assert!(!hosts.allows("https", "example.com", None));
        assert!(!hosts.allows("http", "self", None));
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason() {
        assert!(parse_error("example.com").contains("needs a scheme"));
        assert!(parse_error("https://example.com/api").contains("must not have a path"));
        assert!(parse_error("https://example.com:http").contains("not a number"));
        assert!(parse_error("*://example.com").contains("no default port"));
        assert!(parse_error("ftp://example.com").contains("no default port"));
        assert!(parse_error("https://api.*.com").contains("wildcard host"));
        assert!(parse_error("https://:443").contains("no host"));
        assert!(parse_error("http://localhost:9..9").contains("empty"));
        assert!(parse_error("h2c+x://example.com:1").contains("scheme"));
    }

    #[test]
    fn trailing_slash_is_tolerated() {
        assert!(allowed(&["https://example.com/"]).allows("https", "example.com", None));
    }

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
        let variables =
            variables::AppState::configure(&app, &HostSettings::default()).expect("variables");
        AppState::configure(&app, &variables).expect("configure")
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
        let variables =
            variables::AppState::configure(&app, &HostSettings::default()).expect("variables");
        let error = format!(
            "{:#}",
            AppState::configure(&app, &variables).err().expect("fails")
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

    /// Records what it was asked to dispatch and answers 204.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(LocalTarget, String)>>);

    impl LocalDispatch for Recorder {
        fn dispatch(
            &self,
            target: LocalTarget,
            request: Request<WasiBody>,
        ) -> BoxFuture<'_, wasmtime_wasi_http::Result<Response<WasiBody>>> {
            let path = request.uri().path().to_string();
            self.0.lock().expect("not poisoned").push((target, path));
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
    async fn chaining_without_an_http_trigger_finds_no_destination() {
        let mut instance = app_state("[\"http://self\"]", "").instance_state("a");
        let result = send(&mut instance, "http://self/").await;
        assert!(
            matches!(result, Err(wasmtime_wasi_http::Error::DestinationNotFound)),
            "{result:?}"
        );
    }
}
