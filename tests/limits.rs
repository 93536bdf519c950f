//! The host's limits end to end: admission control turns a burst away with
//! 503 + Retry-After instead of failing, a guest that never yields gets 504
//! without stopping the others, and one that grows without bound fails alone.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use support::{App, guest_wasm};

fn manifest(max_concurrency: u32) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "limits"

[[trigger.http]]
route = "/..."
component = "limits"

[component.limits]
source = "{}"
[component.limits.tool.spindle]
max_concurrency = {max_concurrency}
timeout = "1s"
memory_limit = "32MiB"
"#,
        guest_wasm("limits").display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_beyond_the_limit_gets_200_or_503_with_retry_after_and_nothing_else() {
    let app = App::new(&manifest(8));
    let spindle = app.start();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("{}/slow", spindle.base_url());
    let calls = (0..2_000).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .get(&url)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("every request gets an answer");
            let retry_after = response.headers().get("retry-after").is_some();
            (response.status().as_u16(), retry_after)
        }
    });
    let outcomes = join_all(calls).await;

    let served = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let turned_away = outcomes.iter().filter(|(status, _)| *status == 503).count();
    assert_eq!(
        served + turned_away,
        outcomes.len(),
        "only 200 and 503: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|(status, retry)| *status != 503 || *retry),
        "every 503 carries Retry-After"
    );
    assert!(
        served >= 8,
        "at least the admitted calls were served: {served}"
    );
    assert!(
        turned_away > 0,
        "2,000 calls at once against a limit of 8 must turn some away"
    );
    let rss = spindle.resident_memory_bytes();
    assert!(
        rss < 512 << 20,
        "the host's memory stays bounded: {} MiB",
        rss >> 20
    );
    assert_eq!(spindle.get("/").await.status, 200, "and it still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_guest_gets_504_while_other_requests_are_served() {
    let app = App::new(&manifest(8));
    let spindle = app.start();
    let started = Instant::now();
    let (looping, others) = tokio::join!(spindle.get("/loop"), async {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(spindle.get("/").await.status);
        }
        statuses
    });
    assert_eq!(looping.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 1s timeout ended the call (took {:?})",
        started.elapsed()
    );
    assert_eq!(
        others,
        vec![200; 5],
        "the other requests were served meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hungry_guest_fails_alone() {
    let app = App::new(&manifest(8));
    let spindle = app.start();
    assert_eq!(spindle.get("/grow").await.status, 500);
    assert_eq!(
        spindle.get("/").await.status,
        200,
        "the next request is served"
    );
}

#[tokio::test]
async fn guest_output_goes_to_the_component_log_file_and_the_host_log() {
    let app = App::new(&manifest(8));
    let spindle = app.start();
    assert_eq!(spindle.get("/slow").await.status, 200);
    spindle.wait_for_log_count("slow request started", 1, Duration::from_secs(10));
    let line = spindle
        .stderr()
        .lines()
        .find(|line| line.contains("slow request started"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("component=limits"),
        "the log names the component: {line}"
    );
    let file = app
        .manifest_path()
        .parent()
        .expect("app dir")
        .join(".spin/logs/limits_stdout.txt");
    let logged = std::fs::read_to_string(&file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    assert_eq!(logged, "slow request started\n");
}

/// Guests that never yield, as many as there are worker threads and more,
/// must not starve another component: each gives up its thread at every
/// epoch tick to the back of the run queue. (With wasmtime's default yield
/// the looping guest was polled again at once from the worker's LIFO slot,
/// and a request queued behind it waited a quarter of a second, hostile
/// guests' fault scenario found.)
#[tokio::test(flavor = "multi_thread")]
async fn looping_guests_do_not_starve_another_component() {
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/hello/...\"\ncomponent = \"hello\"\n\n\
         [component.hello]\nsource = \"{}\"\n",
        manifest(4).replace("timeout = \"1s\"", "timeout = \"2s\""),
        guest_wasm("hello").display()
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    let loops = join_all((0..4).map(|_| spindle.get("/loop")));
    let hellos = async {
        // Requests to the other component, one after another, until the
        // loops end (or for their 2 s deadline, whichever is first).
        let started = Instant::now();
        let mut answered = 0;
        while started.elapsed() < Duration::from_secs(2) {
            assert_eq!(spindle.get("/hello/").await.status, 200);
            answered += 1;
        }
        answered
    };
    let (loops, answered) = tokio::join!(loops, hellos);
    assert!(
        loops.iter().all(|reply| reply.status == 504),
        "the loops were stopped: {loops:?}"
    );
    // Starved, five got through in those two seconds; served fairly, about
    // nine hundred (a debug build).
    assert!(
        answered >= 40,
        "only {answered} requests to the other component were served while four guests looped"
    );
}
