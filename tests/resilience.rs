//! Resilient outbound HTTP end to end: a guest calls a local server that the
//! test makes fail, hang or recover on demand, and the server's own record of
//! requests shows what the host's retries, timeouts and breaker did.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use support::{App, Reply, Spindle, guest_wasm};

/// What the upstream does with the next requests.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Unavailable,
    Slow(Duration),
}

/// A local HTTP server whose behaviour the test switches.
struct Upstream {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// The length of each request body received in full, in order.
    bodies: Arc<Mutex<Vec<usize>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let address = listener.local_addr().expect("the upstream's address");
        let requests = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(mode));
        let bodies: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (counter, current, received) = (requests.clone(), mode.clone(), bodies.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, current, received) =
                    (counter.clone(), current.clone(), received.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mode = *current.lock().expect("lock");
                    let received = received.clone();
                    async move {
                        // Read the whole request first, as a real server does:
                        // answering mid-upload makes hyper close the
                        // connection under the client's feet.
                        let body = request.into_body().collect().await.expect("request body");
                        received.lock().expect("lock").push(body.to_bytes().len());
                        let status = match mode {
                            Mode::Ok => StatusCode::OK,
                            Mode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                            Mode::Slow(delay) => {
                                tokio::time::sleep(delay).await;
                                StatusCode::OK
                            }
                        };
                        let mut response = Response::new(Full::new(Bytes::from("upstream")));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Upstream {
            address,
            requests,
            bodies,
            mode,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn bodies(&self) -> Vec<usize> {
        self.bodies.lock().expect("lock").clone()
    }
}

/// The `outbound-http` guest allowed to reach `upstream`, with `policy`
/// (TOML keys of one `outbound_http` entry) for `127.0.0.1`.
fn start(upstream: &Upstream, policy: &str) -> (App, Spindle) {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "resilience"

[[trigger.http]]
route = "/..."
component = "caller"

[component.caller]
source = "{wasm}"
allowed_outbound_hosts = ["http://{address}"]

[[component.caller.tool.spindle.outbound_http]]
host = "127.0.0.1"
{policy}
"#,
        wasm = guest_wasm("outbound-http").display(),
        address = upstream.address,
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    (app, spindle)
}

/// Asks the guest to call the upstream: `query` is `method=POST&key=K&` or empty.
async fn call(spindle: &Spindle, upstream: &Upstream, query: &str) -> Reply {
    spindle
        .get(&format!("/?{query}url=http://{}/", upstream.address))
        .await
}

#[tokio::test]
async fn a_failing_get_is_retried_up_to_the_limit() {
    let upstream = Upstream::start(Mode::Unavailable).await;
    let (_app, spindle) = start(&upstream, "retries = 2\nbreaker_failures = 100");
    let reply = call(&spindle, &upstream, "").await;
    assert_eq!(
        reply.body, "503\nupstream",
        "the last answer is relayed: {reply:?}"
    );
    assert_eq!(upstream.requests(), 3, "one attempt and two retries");

    upstream.set(Mode::Ok);
    let reply = call(&spindle, &upstream, "").await;
    assert_eq!(reply.body, "200\nupstream");
    assert_eq!(upstream.requests(), 4, "a success is not retried");
}

#[tokio::test]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let upstream = Upstream::start(Mode::Unavailable).await;
    let (_app, spindle) = start(&upstream, "retries = 2\nbreaker_failures = 100");
    let reply = call(&spindle, &upstream, "method=POST&").await;
    assert_eq!(reply.body, "503\nupstream", "{reply:?}");
    assert_eq!(
        upstream.requests(),
        1,
        "a POST without Idempotency-Key is sent once"
    );

    let reply = call(&spindle, &upstream, "method=POST&key=order-42&").await;
    assert_eq!(reply.body, "503\nupstream", "{reply:?}");
    assert_eq!(
        upstream.requests(),
        4,
        "with a key it is retried like a GET"
    );
}

#[tokio::test]
async fn a_large_post_with_an_idempotency_key_is_delivered_whole_once_and_not_retried() {
    let upstream = Upstream::start(Mode::Unavailable).await;
    let (_app, spindle) = start(&upstream, "retries = 2\nbreaker_failures = 100");
    // Over the host's 1 MiB replay cap: streamed, so it cannot be sent again.
    let large = 3 << 20;

    let reply = call(
        &spindle,
        &upstream,
        &format!("method=POST&size={large}&key=k&"),
    )
    .await;

    assert_eq!(reply.body, "503\nupstream", "{reply:?}");
    assert_eq!(
        upstream.bodies(),
        [large],
        "one request, with the whole body"
    );

    // A small body with a key is still kept and retried.
    let reply = call(&spindle, &upstream, "method=POST&size=1000&key=k&").await;
    assert_eq!(reply.body, "503\nupstream", "{reply:?}");
    assert_eq!(upstream.bodies(), [large, 1000, 1000, 1000]);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_a_successful_probe_closes_it() {
    let upstream = Upstream::start(Mode::Unavailable).await;
    let (_app, spindle) = start(
        &upstream,
        "retries = 0\nbreaker_failures = 3\nbreaker_cooldown = \"500ms\"",
    );
    for _ in 0..3 {
        assert_eq!(call(&spindle, &upstream, "").await.body, "503\nupstream");
    }
    assert_eq!(upstream.requests(), 3);

    // Open: refused without a request reaching the server.
    let reply = call(&spindle, &upstream, "").await;
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("DestinationUnavailable"), "{reply:?}");
    assert_eq!(upstream.requests(), 3, "nothing was sent while open");
    spindle.wait_for_stderr("circuit opened", Duration::from_secs(5));

    // After the cool-down one probe goes through; its success closes it.
    upstream.set(Mode::Ok);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = call(&spindle, &upstream, "").await;
        if reply.body == "200\nupstream" {
            break;
        }
        assert!(reply.body.contains("DestinationUnavailable"), "{reply:?}");
        assert!(
            Instant::now() < until,
            "the breaker never let a probe through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream.requests(),
        4,
        "exactly one probe reached the server"
    );
    assert_eq!(call(&spindle, &upstream, "").await.body, "200\nupstream");
    assert_eq!(upstream.requests(), 5, "closed again: calls go through");
    spindle.wait_for_stderr("circuit closed", Duration::from_secs(5));
    let opened = spindle.stderr().matches("circuit opened").count();
    assert_eq!(
        opened, 1,
        "the opening is logged once, not per refused call"
    );

    let metrics = reqwest::get(format!("{}/metrics", spindle.ops_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let destination = format!("http://127.0.0.1:{}", upstream.address.port());
    assert!(
        metrics.contains(&format!(
            "spindle_outbound_breaker_state{{component=\"caller\",destination=\"{destination}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "spindle_outbound_requests_total{{component=\"caller\",destination=\"{destination}\",outcome=\"refused_open\"}}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let upstream = Upstream::start(Mode::Slow(Duration::from_secs(5))).await;
    let (_app, spindle) = start(&upstream, "timeout = \"300ms\"\nretries = 0");
    let started = Instant::now();
    let reply = call(&spindle, &upstream, "").await;
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("ConnectionReadTimeout"), "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it did not wait for the server"
    );
    assert_eq!(upstream.requests(), 1);
}
