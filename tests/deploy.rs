//! Hot deploy end to end: `spindle deploy` sends a new version of one
//! component to a running host, which swaps it in under load without
//! dropping a request, and refuses what it cannot run.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{App, Spindle, guest_wasm};

const TOKEN: &str = "test-deploy-token";

fn start() -> (App, Spindle) {
    let app = App::new(&format!(
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
    ));
    let spindle = app.start_with_env(&[], &[("SPINDLE_DEPLOY_TOKEN", TOKEN)]);
    (app, spindle)
}

/// Runs `spindle deploy web --source <wasm>` against `spindle`.
fn deploy(app: &App, spindle: &Spindle, source: &std::path::Path, token: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("deploy")
        .arg("web")
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
