//! A Spin app written in Python runs on spindle: `tests/guests-python/http-app`
//! (the WASI 0.2 SDK, spin-sdk 3.x) and `tests/guests-python-spin4/http-app`
//! (Spin 4.0's SDK 5, async handlers, WASI 0.3) are built with componentize-py
//! and the Spin Python SDK from PyPI by `scripts/python-guests`, exactly as a
//! Spin user would build them, and served by the real `spindle up`, which must
//! answer on each of their routes: plain HTTP, key-value, variables, outbound
//! HTTP.

mod support;

use std::path::Path;
use std::time::Duration;

use support::App;
use support::python::{python_guest_wasm, python_spin4_guest_wasm};
use support::upstream::Upstream;

/// The Python app `source` on every path, granted the default store, a
/// `greeting` variable set from the app's variables, and `allowed` outbound
/// hosts.
fn manifest(source: &Path, allowed: &[String]) -> String {
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
        source.display(),
        allowed.join(", ")
    )
}

/// One app start checks every route: the Python component is large (the
/// CPython interpreter is inside), and compiling it once keeps this test
/// well within the start-up deadline on a busy machine.
#[tokio::test]
async fn python_app_serves_http_key_value_variables_and_outbound_http() {
    let allowed = Upstream::hello().await;
    let denied = Upstream::hello().await;
    let app = App::new(&manifest(&python_guest_wasm("http-app"), &[allowed.url()]))
        .with_shared_compile_cache();
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

/// A Python app built for Spin 4.0 (SDK 5, whose handler is async and whose
/// component names WASI 0.3 both as `0.3.0` and as Spin 4.0's release
/// candidate) serves the same routes; its key-value store keeps what one
/// request sets for the next.
#[tokio::test]
async fn a_spin_4_0_python_app_serves_http_key_value_variables_and_outbound_http() {
    let allowed = Upstream::hello().await;
    let denied = Upstream::hello().await;
    let app = App::new(&manifest(
        &python_spin4_guest_wasm("http-app"),
        &[allowed.url()],
    ))
    .with_shared_compile_cache();
    let spindle = app.start();

    let reply = spindle.get("/hello").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello from python on spin 4"),
        "{reply:?}\n{}",
        spindle.stderr()
    );
    assert_eq!(
        reply
            .headers
            .get("x-spindle-guest")
            .and_then(|value| value.to_str().ok()),
        Some("python"),
        "{reply:?}"
    );

    // Key-value: a key set by one request is there for the next.
    let reply = spindle.get("/kv/get?key=spin4-key").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = spindle.get("/kv/set?key=spin4-key&value=kept").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "stored"),
        "{reply:?}"
    );
    let reply = spindle.get("/kv/get?key=spin4-key").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "kept"),
        "{reply:?}"
    );

    let reply = spindle.get("/variables?name=greeting").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello, pythonistas"),
        "{reply:?}"
    );

    let reply = spindle
        .get(&format!("/outbound?url={}/greeting", allowed.url()))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "200\nhello from upstream /greeting"),
        "{reply:?}"
    );
    assert_eq!(allowed.requests(), 1);

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
