//! Graceful shutdown: on SIGTERM the host stops accepting, lets in-flight
//! requests finish, and exits 0.

mod support;

use std::process::Command;
use std::time::Duration;

use futures::future::join_all;
use support::{App, guest_wasm};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let app = App::new(&format!(
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
    ));
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

    let status = Command::new("kill")
        .args(["-TERM", &spindle.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());

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
}
