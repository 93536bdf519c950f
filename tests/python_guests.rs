//! A Spin app written in Python runs on spindle: `tests/guests-python/http-app`
//! is built with componentize-py and the Spin Python SDK from PyPI (the
//! WASI 0.2 SDK, spin-sdk 3.x) by `scripts/python-guests`, exactly as a Spin
//! user would build it, and served by the real `spindle up`, which must answer
//! on each of its routes: plain HTTP, key-value, variables, outbound HTTP.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use support::App;
use support::python::python_guest_wasm;

/// The Python app on every path, granted the default store, a `greeting`
/// variable set from the app's variables, and `allowed` outbound hosts.
fn manifest(allowed: &[String]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|host| format!("\"{host}\"")).collect();
    format!(
        r#"spin_manifest_version = 2
[application]
name = "python-app"

[variables]
audience = {{ default = "pythonistas" }}

[[trigger.http]]
route = "/..."
component = "python"

[component.python]
source = "{}"
key_value_stores = ["default"]
allowed_outbound_hosts = [{}]
[component.python.variables]
greeting = "hello, {{{{ audience }}}}"
"#,
        python_guest_wasm("http-app").display(),
        allowed.join(", ")
    )
}

/// One app start checks every route: the Python component is large (the
/// CPython interpreter is inside), and compiling it once keeps this test
/// well within the start-up deadline on a busy machine.
#[tokio::test]
async fn python_app_serves_http_key_value_variables_and_outbound_http() {
    let allowed = Upstream::start().await;
    let denied = Upstream::start().await;
    let app = App::new(&manifest(&[allowed.url()])).with_shared_compile_cache();
    let spindle = app.start();

    // Plain HTTP: the body bytes and a header the handler sets.
    let reply = spindle.get("/hello").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello from python"),
        "{reply:?}"
    );
    assert_eq!(
        reply
            .headers
            .get("x-spindle-guest")
            .and_then(|value| value.to_str().ok()),
        Some("python"),
        "{reply:?}"
    );

    // Key-value: set, get, exists and delete on the default store.
    let reply = spindle.get("/kv").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "ok"),
        "{reply:?}"
    );

    // Variables: the component variable, rendered from the app variable.
    let reply = spindle.get("/variables?name=greeting").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello, pythonistas"),
        "{reply:?}"
    );

    // Outbound HTTP to an allowed host: its status and body come back.
    let reply = spindle
        .get(&format!("/outbound?url={}/greeting", allowed.url()))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "200\nhello from upstream /greeting"),
        "{reply:?}"
    );
    assert_eq!(allowed.requests(), 1);

    // Outbound HTTP to a host not in allowed_outbound_hosts fails in the
    // guest with `HttpRequestDenied`, as in Spin, nothing reaches that host,
    // and the host's log says why.
    let reply = spindle
        .get(&format!("/outbound?url={}/secret", denied.url()))
        .await;
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(
        reply.body.starts_with("outbound error:") && reply.body.contains("HttpRequestDenied"),
        "{reply:?}"
    );
    assert_eq!(denied.requests(), 0, "a denied request reached the server");
    spindle.wait_for_stderr(
        &format!("outbound request to {} denied", denied.url()),
        Duration::from_secs(10),
    );
}

/// A local HTTP server answering `hello from upstream <path>` to everything,
/// counting the requests it gets.
struct Upstream {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream server");
        let address = listener.local_addr().expect("the upstream's address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = format!("hello from upstream {}", request.uri().path());
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Upstream { address, requests }
    }

    /// `http://127.0.0.1:PORT`, as the guest addresses it.
    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
