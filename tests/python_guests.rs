//! A Spin app written in Python runs on spindle: `tests/guests-python/http-app`
//! is built with componentize-py and the Spin Python SDK from PyPI (the
//! WASI 0.2 SDK, spin-sdk 3.x) by `scripts/python-guests`, exactly as a Spin
//! user would build it, and served by the real `spindle up`, which must answer
//! on each of its routes: plain HTTP, key-value, variables, outbound HTTP.

mod support;

use std::time::Duration;

use support::App;
use support::python::python_guest_wasm;
use support::upstream::Upstream;

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
    let allowed = Upstream::hello().await;
    let denied = Upstream::hello().await;
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
