//! A Spin app written in JavaScript runs on spindle: `tests/guests-js/http-app`
//! is built with the Spin JS SDK (`@fermyon/spin-sdk`, the WASI 0.2 SDK) and
//! its `j2w` build tool over ComponentizeJS, from the npm registry, by
//! `scripts/js-guests`, exactly as a Spin user would build it, and served by
//! the real `spindle up`. Each test checks one thing the app does: plain HTTP,
//! key-value, variables, outbound HTTP.

mod support;

use hyper::StatusCode;

use support::js::{js_guest_wasm, warm_shared_compile_cache};
use support::upstream::{Upstream, hello_from};
use support::{App, Spindle};

/// The JavaScript app on every path, granted the default store, a `greeting`
/// variable rendered from the app's variables, and `allowed` outbound hosts.
fn manifest(allowed: &[String]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|host| format!("\"{host}\"")).collect();
    format!(
        r#"spin_manifest_version = 2
[application]
name = "js-app"

[variables]
audience = {{ default = "javascripters" }}

[[trigger.http]]
route = "/..."
component = "js"

[component.js]
source = "{}"
key_value_stores = ["default"]
allowed_outbound_hosts = [{}]
[component.js.variables]
greeting = "hello, {{{{ audience }}}}"
"#,
        js_guest_wasm("http-app").display(),
        allowed.join(", ")
    )
}

/// Starts the app; every test shares one compile cache, warmed first, so the
/// large JavaScript component (a whole JS engine) is compiled once rather
/// than once per test.
fn start(allowed: &[String]) -> (App, Spindle) {
    warm_shared_compile_cache(&js_guest_wasm("http-app"));
    let app = App::new(&manifest(allowed)).with_shared_compile_cache();
    let spindle = app.start();
    (app, spindle)
}

#[tokio::test]
async fn hello_answers_with_its_body_and_header() {
    let (_app, spindle) = start(&[]);

    let reply = spindle.get("/hello").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "Hello from the Spin JS SDK");
    assert_eq!(
        reply
            .headers
            .get("x-js-guest")
            .and_then(|value| value.to_str().ok()),
        Some("spin-js-sdk"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn key_value_set_get_and_delete_on_the_default_store() {
    let (_app, spindle) = start(&[]);

    let reply = spindle.get("/kv").await;

    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "ok"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn variable_renders_from_the_app_variables() {
    let (_app, spindle) = start(&[]);

    let reply = spindle.get("/variables").await;

    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello, javascripters"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn fetch_reaches_an_allowed_host_and_relays_its_status_and_body() {
    let upstream =
        Upstream::start(|parts, _| hello_from(parts.uri.path(), StatusCode::ACCEPTED)).await;
    let (_app, spindle) = start(std::slice::from_ref(&upstream.url()));

    let reply = spindle
        .get(&format!("/outbound?url={}/greeting", upstream.url()))
        .await;

    // The upstream answers 202, so a relayed status is told apart from the
    // app's own 200.
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (202, "hello from upstream /greeting"),
        "{reply:?}"
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn fetch_of_a_host_not_allowed_fails_in_the_guest_and_sends_nothing() {
    let upstream =
        Upstream::start(|parts, _| hello_from(parts.uri.path(), StatusCode::ACCEPTED)).await;
    let (_app, spindle) = start(&["https://example.com".to_string()]);

    let reply = spindle
        .get(&format!("/outbound?url={}/secret", upstream.url()))
        .await;

    // The app answers 502 when its fetch() rejects.
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.body.starts_with("fetch failed"), "{reply:?}");
    assert_eq!(
        upstream.requests(),
        0,
        "a denied request reached the server"
    );
}
