//! Graceful shutdown: on SIGTERM the host stops accepting, lets in-flight
//! requests finish, and exits 0.

mod support;

use std::process::Command;
use std::time::Duration;

use futures::future::join_all;
use support::{App, Spindle, guest_wasm};

/// An app of the `limits` guest (spin-sdk 7, WASI 0.3) on `/...`.
fn limits_app() -> App {
    App::new(&format!(
        r#"spin_manifest_version = 2
[application]
name = "shutdown"

[[trigger.http]]
route = "/..."
component = "limits"

[component.limits]
source = "{}"
"#,
        guest_wasm("limits").display()
    ))
}

fn sigterm(spindle: &Spindle) {
    let status = Command::new("kill")
        .args(["-TERM", &spindle.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let app = limits_app();
    let mut spindle = app.start();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("{}/slow", spindle.base_url());
    let in_flight = tokio::spawn(join_all((0..20).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).send().await.map(|r| r.status().as_u16()) }
    })));
    // In flight means the guest has started them: it prints a line for each.
    spindle.wait_for_log_count("slow request started", 20, Duration::from_secs(30));

    sigterm(&spindle);

    let answers = in_flight.await.expect("the request task");
    assert!(
        answers.iter().all(|answer| matches!(answer, Ok(200))),
        "in-flight requests finish with 200: {answers:?}"
    );
    let exit = spindle.wait_for_exit(Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    let after = client
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        after.is_err(),
        "no new requests are accepted after shutdown"
    );
    assert!(
        !spindle.stderr().contains("panicked"),
        "the instances are let go, not dropped mid-flight"
    );
}

/// A WASI 0.3 instance outlives its request, waiting for the next one; a
/// SIGTERM then lets it go like any idle instance, instead of dropping it
/// with the runtime (which wasmtime-wasi-http logs as a panicked worker).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_right_after_a_request_lets_its_instance_go_cleanly() {
    let app = limits_app();
    let mut spindle = app.start();
    let reply = spindle.get("/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));

    // Well within the second an idle instance waits for another request.
    sigterm(&spindle);

    let exit = spindle.wait_for_exit(Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    let log = spindle.stderr();
    assert!(
        !log.contains("panicked") && !log.contains("ERROR"),
        "shutdown logs no failure: {log}"
    );
}
