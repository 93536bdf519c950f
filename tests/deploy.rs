//! Hot deploy end to end: `spindle deploy` sends a new version of one
//! component to a running host, which swaps it in under load without
//! dropping a request, and refuses what it cannot run.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::services::redis_url;
use support::{App, Spindle, guest_wasm};

const TOKEN: &str = "test-deploy-token";

/// One component, `web`, serving `/...` with the hello guest.
fn web_app() -> App {
    App::new(&format!(
        r#"spin_manifest_version = 2
[application]
name = "deploy"

[[trigger.http]]
route = "/..."
component = "web"

[component.web]
source = "{}"
"#,
        guest_wasm("hello").display()
    ))
}

fn start() -> (App, Spindle) {
    let app = web_app();
    let spindle = app.start_with_env(&[], &[("SPINDLE_DEPLOY_TOKEN", TOKEN)]);
    (app, spindle)
}

/// Runs `spindle deploy web --source <wasm>` against `spindle`.
fn deploy(app: &App, spindle: &Spindle, source: &std::path::Path, token: &str) -> (bool, String) {
    deploy_component(app, spindle, "web", source, token)
}

/// Runs `spindle deploy <component> --source <wasm>` against `spindle`.
fn deploy_component(
    app: &App,
    spindle: &Spindle,
    component: &str,
    source: &std::path::Path,
    token: &str,
) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("deploy")
        .arg(component)
        .arg("-f")
        .arg(app.manifest_path())
        .arg("--source")
        .arg(source)
        .args(["--ops", &spindle.ops_url(), "--token", token])
        .output()
        .expect("running spindle deploy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_under_load_switches_versions_without_a_failed_request() {
    let (app, spindle) = start();
    let spindle = Arc::new(spindle);
    let done = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (spindle, done) = (spindle.clone(), done.clone());
        async move {
            let mut bodies = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let reply = spindle.get("/greet").await;
                assert_eq!(reply.status, 200, "no request fails during the deploy");
                bodies.push(reply.body);
            }
            bodies
        }
    });
    assert!(
        spindle
            .get("/greet")
            .await
            .body
            .starts_with("Hello from Spindle!")
    );
    let (ok, output) = deploy(&app, &spindle, &guest_wasm("http-echo"), TOKEN);
    assert!(ok, "deploy failed: {output}");
    // Keep the load running until the new version has answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !spindle
        .get("/greet")
        .await
        .body
        .contains("\"path_and_query\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new version never answered"
        );
    }
    done.store(true, Ordering::Relaxed);
    let bodies = load.await.expect("the load loop");

    let old = bodies
        .iter()
        .position(|b| b.starts_with("Hello from Spindle!"));
    let new = bodies.iter().position(|b| b.contains("\"path_and_query\""));
    assert!(old.is_some(), "the old version served before the swap");
    if let (Some(old), Some(new)) = (old, new) {
        assert!(old < new, "responses switched from old to new");
        assert!(
            bodies[new..]
                .iter()
                .all(|b| b.contains("\"path_and_query\"")),
            "no old body after the first new one"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_wasm_is_refused_with_a_clear_error_and_changes_nothing() {
    let (app, spindle) = start();
    let junk = app.manifest_path().with_file_name("junk.wasm");
    std::fs::write(&junk, b"\0asm this is not a component").expect("write junk");
    let (ok, output) = deploy(&app, &spindle, &junk, TOKEN);
    assert!(!ok, "a bad wasm must be refused: {output}");
    assert!(
        output.contains("422") && output.contains("not a valid component"),
        "{output}"
    );
    assert!(
        spindle
            .get("/x")
            .await
            .body
            .starts_with("Hello from Spindle!")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_without_the_token_is_unauthorized() {
    let (app, spindle) = start();
    let (ok, output) = deploy(&app, &spindle, &guest_wasm("http-echo"), "wrong");
    assert!(!ok);
    assert!(output.contains("401"), "{output}");
    assert!(
        spindle
            .get("/x")
            .await
            .body
            .starts_with("Hello from Spindle!")
    );
}

#[tokio::test]
async fn health_answers_on_the_ops_listener() {
    let (_app, spindle) = start();
    let reply = reqwest::get(format!("{}/health", spindle.ops_url()))
        .await
        .expect("GET /health");
    assert_eq!(reply.status(), 200);
}

#[tokio::test]
async fn an_unauthenticated_upload_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_app, spindle) = start();
    let ops = spindle.ops_url();
    let address = ops.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting to the ops listener");
    // Announce 200 MiB, send only 64 KiB of it: the answer must come anyway.
    let head = format!(
        "PUT /components/web HTTP/1.1\r\nHost: {address}\r\n\
         Content-Length: {}\r\n\r\n",
        200u64 << 20
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    stream
        .write_all(&vec![0u8; 64 << 10])
        .await
        .expect("a little body");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the host answered without waiting for the 200 MiB")
        .expect("reading the answer");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn an_empty_or_placeholder_deploy_token_stops_start_up() {
    let app = web_app();
    let (code, stderr) = app.run_up_expecting_failure_with(&["--deploy-token="]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is set but empty"), "{stderr}");
    let (code, stderr) =
        app.run_up_expecting_failure_with(&["--deploy-token", "replace-with-a-random-token"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("placeholder"), "{stderr}");
}

/// A Redis-triggered component: a new version that no longer exports the
/// Redis handler is refused and nothing is swapped (its HTTP side neither);
/// a version that does is swapped in and handles the next message.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_triggered_component_is_swapped_only_for_a_version_that_handles_redis() {
    let channel = format!("spindle-deploy-{}", uuid::Uuid::new_v4().simple());
    let app = App::new(&format!(
        "spin_manifest_version = 2\n[application]\nname = \"deploy-redis\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"subscriber\"\n\
         [[trigger.redis]]\naddress = \"{}\"\nchannel = \"{channel}\"\ncomponent = \"subscriber\"\n\
         [component.subscriber]\nsource = \"{}\"\nkey_value_stores = [\"default\"]\n",
        redis_url(),
        guest_wasm("redis-subscriber").display()
    ));
    let spindle = app.start_with_env(&[], &[("SPINDLE_DEPLOY_TOKEN", TOKEN)]);
    let client = redis::Client::open(redis_url().as_str()).expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let mut expected = String::new();
    let mut publish_and_see = async |message: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message)
            .query_async(&mut redis)
            .await
            .expect("publish");
        expected.push_str(message);
        expected.push('\n');
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = spindle.get("/").await.body;
            if received == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "received {received:?}, want {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    publish_and_see("before").await;

    let (ok, output) = deploy_component(&app, &spindle, "subscriber", &guest_wasm("hello"), TOKEN);
    assert!(
        !ok,
        "a version without the Redis export must be refused: {output}"
    );
    assert!(output.contains("inbound-redis"), "{output}");
    publish_and_see("after the refusal").await;

    let (ok, output) = deploy_component(
        &app,
        &spindle,
        "subscriber",
        &guest_wasm("redis-subscriber"),
        TOKEN,
    );
    assert!(ok, "{output}");
    publish_and_see("after the deploy").await;
}
