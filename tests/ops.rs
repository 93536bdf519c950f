//! The ops listener's readiness and metrics, against the real binary: `/ready`
//! follows PostgreSQL and NATS going away and coming back without a restart,
//! `/metrics` is Prometheus text whose counters move with traffic, and the
//! listener holds to the same connection limits as the app listener.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::connections::{left_open, stalled_connections};
use support::services::{PrivateNats, postgres_url};
use support::{App, Spindle, guest_wasm, http_manifest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP forwarder the test can cut: while cut, open connections are closed
/// and new ones are refused, as if the server behind it were down.
struct CuttableProxy {
    port: u16,
    open: Arc<Mutex<bool>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let open = Arc::new(Mutex::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (open, connections) = (open.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !*open.lock().expect("lock") {
                        continue; // Dropped: the client sees the connection close.
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().expect("lock").push(task);
                }
            })
        };
        Self {
            port,
            open,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        *self.open.lock().expect("lock") = false;
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        *self.open.lock().expect("lock") = true;
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// An app whose `handler` component owns a PostgreSQL database reached
/// through `database_url`, with the bus at `nats_url`.
fn app(database_url: &str, nats_url: &str) -> App {
    let wasm = guest_wasm("message-handler");
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "ops"

[variables]
replica = {{ default = "" }}

[[trigger.http]]
route = "/..."
component = "handler"

[[trigger.nats]]
subject = "ops.>"
component = "handler"

[component.handler]
source = "{wasm}"
variables = {{ replica = "{{{{ replica }}}}" }}
[component.handler.tool.spindle]
database = "handler"
allowed_publish = ["ops.>"]
"#,
        wasm = wasm.display()
    );
    let app = App::new(&manifest);
    let dir = app.manifest_path().parent().expect("app dir").to_path_buf();
    support::install_message_handler_migrations(&dir, "handler");
    std::fs::write(
        dir.join("runtime-config.toml"),
        format!(
            "[messaging]\nurl = \"{nats_url}\"\n[database.handler]\nurl = \"{database_url}\"\n"
        ),
    )
    .expect("write runtime config");
    app
}

fn start(app: &App) -> Spindle {
    let config = app
        .manifest_path()
        .parent()
        .expect("dir")
        .join("runtime-config.toml");
    app.start_with(&["--runtime-config-file", config.to_str().expect("utf-8")])
}

async fn ready(spindle: &Spindle) -> (u16, Json) {
    let response = reqwest::get(format!("{}/ready", spindle.ops_url()))
        .await
        .expect("GET /ready");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON from /ready");
    (status, body)
}

/// Polls `/ready` until it answers `status`, returning the report.
async fn wait_for_ready_status(spindle: &Spindle, status: u16, deadline: Duration) -> Json {
    let until = Instant::now() + deadline;
    loop {
        let (got, report) = ready(spindle).await;
        if got == status {
            return report;
        }
        assert!(
            Instant::now() < until,
            "/ready stayed {got}, wanted {status}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn down(report: &Json) -> Vec<String> {
    report["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["status"] == "down")
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect()
}

/// A database on the local PostgreSQL server, reached through `proxy`.
fn database_through(proxy: &CuttableProxy) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let server = postgres_url();
    let credentials = server
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map_or("postgres", |(user, _)| user)
        .to_string();
    format!(
        "postgres://{credentials}@127.0.0.1:{}/spindle_test_{}_ops",
        proxy.port,
        &run[..12]
    )
}

fn postgres_address() -> String {
    let server = postgres_url();
    let rest = server
        .split_once('@')
        .map_or(server.as_str(), |(_, rest)| rest);
    rest.split('/')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_postgres_and_nats_going_away_and_coming_back() {
    let proxy = CuttableProxy::start(postgres_address()).await;
    let mut nats = PrivateNats::start();
    let spindle = start(&app(&database_through(&proxy), &nats.url()));

    let report = wait_for_ready_status(&spindle, 200, Duration::from_secs(10)).await;
    assert_eq!(report["status"], "ready");
    let names: Vec<&str> = report["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    for expected in ["database:handler", "bus", "component:handler"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(
        report["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );

    proxy.cut();
    let report = wait_for_ready_status(&spindle, 503, Duration::from_secs(15)).await;
    assert_eq!(report["status"], "unavailable");
    assert_eq!(down(&report), ["database:handler"], "{report}");
    proxy.restore();
    wait_for_ready_status(&spindle, 200, Duration::from_secs(30)).await;

    nats.stop();
    let report = wait_for_ready_status(&spindle, 503, Duration::from_secs(15)).await;
    assert_eq!(down(&report), ["bus"], "{report}");
    nats.resume();
    wait_for_ready_status(&spindle, 200, Duration::from_secs(30)).await;
}

/// Every line of the exposition is a comment (`# HELP`, `# TYPE`, `# UNIT`,
/// `# EOF`) or `name{labels} value`; returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|p| comment.starts_with(p))
                    || comment == "EOF",
                "unexpected comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels: {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        samples.push((series.to_string(), value));
    }
    assert_eq!(
        text.lines().last(),
        Some("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    samples
}

async fn metrics(spindle: &Spindle) -> Vec<(String, f64)> {
    let text = reqwest::get(format!("{}/metrics", spindle.ops_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    parse_prometheus(&text)
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map_or(0.0, |(_, value)| *value)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let nats = PrivateNats::start();
    let proxy = CuttableProxy::start(postgres_address()).await;
    let spindle = start(&app(&database_through(&proxy), &nats.url()));
    let requests = r#"spindle_http_requests_total{component="handler",route="/...",status="200"}"#;
    let acked = r#"spindle_messages_acked_total{component="handler",subject="ops.>"}"#;

    let before = metrics(&spindle).await;
    for _ in 0..3 {
        assert_eq!(spindle.get("/handled").await.status, 200);
    }
    assert_eq!(
        spindle.post("/publish/ops.record", "counted").await.status,
        202
    );
    let until = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = metrics(&spindle).await;
        if sample(&after, acked) >= 1.0 {
            break after;
        }
        assert!(
            Instant::now() < until,
            "no acked message counted: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&after, requests) - sample(&before, requests), 3.0);
    assert!(
        sample(
            &after,
            r#"spindle_http_request_duration_seconds_count{component="handler"}"#
        ) >= 4.0,
        "latency observed for every request"
    );
    assert!(
        sample(
            &after,
            r#"spindle_instantiation_duration_seconds_count{component="handler"}"#
        ) >= 1.0
    );
    assert!(
        after
            .iter()
            .any(|(name, _)| name.starts_with("spindle_calls_in_flight{"))
    );
    assert!(
        after
            .iter()
            .any(|(name, _)| name.starts_with("spindle_outbox_backlog{"))
    );
}

/// A plain app: the ops listener's limits need no service behind it.
fn hello_app() -> App {
    App::new(&http_manifest(&[("/hello", "hello", "hello")]))
}

async fn health(ops_url: &str) -> u16 {
    reqwest::get(format!("{ops_url}/health"))
        .await
        .expect("GET /health")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_connections_that_never_finish_their_headers_are_closed_while_probes_are_served() {
    let app = hello_app();
    let spindle = app.start_with(&["--header-timeout", "1s"]);
    let ops = spindle.ops_url();
    let mut stalled = stalled_connections(&ops, 200).await;

    for _ in 0..10 {
        assert_eq!(health(&ops).await, 200);
    }
    assert_eq!(
        left_open(&mut stalled, Duration::from_secs(10)).await,
        0,
        "ops connections left open past the header timeout"
    );
    assert_eq!(health(&ops).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_ops_connection_cap_probes_wait_and_the_app_listener_is_not_held_up() {
    let app = hello_app();
    let spindle = app.start_with(&["--max-connections", "20", "--header-timeout", "2s"]);
    let ops = spindle.ops_url();
    // 20 stalled connections take every ops slot until the header timeout.
    let _stalled = stalled_connections(&ops, 20).await;
    let stalled_at = Instant::now();

    // The app listener has slots of its own.
    assert_eq!(spindle.get("/hello").await.status, 200);
    assert!(
        stalled_at.elapsed() < Duration::from_secs(1),
        "the app listener waited {:?} for the ops listener's slots",
        stalled_at.elapsed()
    );
    assert_eq!(health(&ops).await, 200);
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(1500),
        "probe served after {:?}, before the stalled connections timed out: the ops cap did not hold",
        stalled_at.elapsed()
    );
}
