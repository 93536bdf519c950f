//! Messaging and the NATS trigger end to end, through a guest that is both
//! HTTP- and NATS-triggered and records what it handled in its database.
//! Scenarios that need no broker run on the in-process bus and on the local
//! NATS server; the JetStream ones run on NATS only.

mod support;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::Value as Json;
use support::services::{PrivateNats, nats_url, postgres_url};
use support::{App, Spindle, guest_wasm};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Broker {
    InProcess,
    Nats,
}

/// The `handler` component triggered by `<prefix>.>` (and by its
/// dead-letter subject `dead.<prefix>`), allowed to publish under the
/// prefix and under `<prefix>-other`. Every run has its own prefix because
/// the NATS server is shared.
struct MessagingApp {
    app: App,
    prefix: String,
    config: std::path::PathBuf,
}

impl MessagingApp {
    fn new(broker: Broker, trigger_extra: &str, database_url: Option<&str>) -> Self {
        Self::with_nats(broker, &nats_url(), trigger_extra, database_url)
    }

    fn with_nats(
        broker: Broker,
        nats: &str,
        trigger_extra: &str,
        database_url: Option<&str>,
    ) -> Self {
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let wasm = guest_wasm("message-handler");
        let manifest = format!(
            r#"spin_manifest_version = 2
[application]
name = "messaging"

[variables]
replica = {{ default = "" }}

[[trigger.http]]
route = "/..."
component = "handler"

[[trigger.nats]]
subject = "{prefix}.>"
component = "handler"
dead_letter_subject = "dead.{prefix}"
{trigger_extra}

[[trigger.nats]]
subject = "dead.{prefix}"
component = "handler"

[component.handler]
source = "{wasm}"
variables = {{ replica = "{{{{ replica }}}}" }}
[component.handler.tool.spindle]
database = "handler"
allowed_publish = ["{prefix}.>", "{prefix}-other.>"]
"#,
            wasm = wasm.display()
        );
        let app = App::new(&manifest);
        let dir = app.manifest_path().parent().expect("app dir").to_path_buf();
        support::install_message_handler_migrations(&dir, "handler");
        let mut config = String::new();
        if broker == Broker::Nats {
            config.push_str(&format!("[messaging]\nurl = \"{nats}\"\n"));
        }
        if let Some(url) = database_url {
            config.push_str(&format!("[database.handler]\nurl = \"{url}\"\n"));
        }
        let config_path = dir.join("runtime-config.toml");
        std::fs::write(&config_path, config).expect("write runtime config");
        Self {
            app,
            prefix,
            config: config_path,
        }
    }

    fn start(&self) -> Spindle {
        self.start_replica("")
    }

    fn start_replica(&self, replica: &str) -> Spindle {
        self.start_with_env(replica, &[])
    }

    fn start_with_env(&self, replica: &str, env: &[(&str, &str)]) -> Spindle {
        let variable = format!("replica={replica}");
        self.app.start_with_env(
            &[
                "--runtime-config-file",
                self.config.to_str().expect("utf-8 path"),
                "--variable",
                &variable,
            ],
            env,
        )
    }

    fn subject(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }
}

/// What the guest recorded: `{"handled": [...], "deliveries": n, "effects": n}`.
async fn handled(spindle: &Spindle) -> Json {
    let reply = spindle.get("/handled").await;
    assert_eq!(reply.status, 200, "GET /handled: {}", reply.body);
    serde_json::from_str(&reply.body).expect("JSON from /handled")
}

/// Polls `/handled` until `done` holds, failing with the last listing.
async fn wait_for_handled(
    spindle: &Spindle,
    deadline: Duration,
    done: impl Fn(&Json) -> bool,
) -> Json {
    let until = Instant::now() + deadline;
    loop {
        let listing = handled(spindle).await;
        if done(&listing) {
            return listing;
        }
        assert!(
            Instant::now() < until,
            "not handled within {deadline:?}: {listing}\nstderr:\n{}",
            spindle.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn entries(listing: &Json) -> Vec<Json> {
    listing["handled"].as_array().cloned().unwrap_or_default()
}

fn entry_for<'a>(listing: &'a Json, subject: &str) -> Option<&'a Json> {
    listing["handled"]
        .as_array()?
        .iter()
        .find(|entry| entry["subject"] == subject)
}

async fn nats_client() -> async_nats::Client {
    async_nats::connect(nats_url())
        .await
        .expect("connect to NATS")
}

/// A subscription known to the server before this returns; the client is
/// returned so the connection stays open.
async fn watch(subject: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let client = nats_client().await;
    let subscriber = client
        .subscribe(subject.to_string())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush the subscription");
    (client, subscriber)
}

// --- publish from HTTP, handle from NATS -------------------------------

async fn http_publish_reaches_the_nats_triggered_component(broker: Broker) {
    let app = MessagingApp::new(broker, "", None);
    let spindle = app.start();
    let subject = app.subject("record");
    let mut watcher = match broker {
        Broker::Nats => Some(watch(&subject).await),
        Broker::InProcess => None,
    };

    let reply = spindle.post(&format!("/publish/{subject}"), "hello").await;
    assert_eq!(reply.status, 202, "{}", reply.body);

    let listing = wait_for_handled(&spindle, Duration::from_secs(10), |l| {
        entry_for(l, &subject).is_some()
    })
    .await;
    let entry = entry_for(&listing, &subject).expect("recorded");
    assert_eq!(entry["body"], "hello");
    let traceparent = entry["traceparent"].as_str().unwrap_or_default();
    assert!(
        traceparent.starts_with("00-") && traceparent.len() == 55,
        "a W3C traceparent travels with the message: {traceparent:?}"
    );
    assert!(
        entry["id"].as_str().is_some_and(|id| id.len() >= 32),
        "a message id: {entry}"
    );

    if let Some((_client, watcher)) = watcher.as_mut() {
        let message = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .expect("the message on NATS in time")
            .expect("a message");
        let headers = message.headers.expect("headers");
        assert_eq!(headers.get("x-test").map(|v| v.as_str()), Some("yes"));
        assert!(headers.get("spindle-message-id").is_some());
        assert!(headers.get("traceparent").is_some());
        assert_eq!(message.payload, "hello");
    }
}

#[tokio::test]
async fn http_publish_reaches_the_nats_triggered_component_in_process() {
    http_publish_reaches_the_nats_triggered_component(Broker::InProcess).await;
}

#[tokio::test]
async fn http_publish_reaches_the_nats_triggered_component_on_nats() {
    http_publish_reaches_the_nats_triggered_component(Broker::Nats).await;
}

#[tokio::test]
async fn publishing_outside_allowed_publish_is_refused() {
    let app = MessagingApp::new(Broker::InProcess, "", None);
    let spindle = app.start();
    let reply = spindle.post("/publish/forbidden.subject", "x").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("allowed_publish"), "{}", reply.body);
    let reply = spindle
        .post(&format!("/publish/{}", app.subject("*")), "x")
        .await;
    assert_eq!(
        reply.status, 400,
        "wildcards cannot be published to: {}",
        reply.body
    );
}

// --- request/reply -------------------------------------------------------

async fn request_reply(broker: Broker) {
    let app = MessagingApp::new(broker, "", None);
    let spindle = app.start();
    let subject = app.subject("echo");

    let reply = spindle.post(&format!("/request/{subject}"), "ping").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "echo: ping");

    let reply = spindle
        .post(&format!("/request/{}-other.nobody", app.prefix), "ping")
        .await;
    assert!(
        reply.status == 503 || reply.status == 504,
        "nobody answers: {} {}",
        reply.status,
        reply.body
    );

    if broker == Broker::Nats {
        let answer = nats_client()
            .await
            .request(subject, "from outside".into())
            .await
            .expect("the component answers a NATS request");
        assert_eq!(answer.payload, "echo: from outside");
    }
}

#[tokio::test]
async fn request_reply_in_process() {
    request_reply(Broker::InProcess).await;
}

#[tokio::test]
async fn request_reply_on_nats() {
    request_reply(Broker::Nats).await;
}

// --- several messages at once in one instance ------------------------------

/// The most `together` messages one instance ran at once, from the replies
/// (`<body> <most>`) to bodies `0..n`, each checked to answer its own message.
fn most_at_once(replies: &[String]) -> usize {
    replies
        .iter()
        .enumerate()
        .map(|(sent, reply)| {
            let (body, most) = reply
                .split_once(' ')
                .unwrap_or_else(|| panic!("reply {reply:?}"));
            assert_eq!(body, sent.to_string(), "each message gets its own reply");
            most.parse::<usize>().expect("a count")
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn one_instance_handles_several_messages_at_once_in_process() {
    let app = MessagingApp::new(Broker::InProcess, "", None);
    let spindle = app.start();
    let path = format!("/request/{}", app.subject("together"));
    let bodies: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    let requests = bodies.iter().map(|body| spindle.post(&path, body));
    let replies: Vec<String> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|reply| {
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body
        })
        .collect();
    let most = most_at_once(&replies);
    assert!(
        most >= 2,
        "one instance ran {most} message at a time: {replies:?}"
    );
}

#[tokio::test]
async fn one_instance_handles_several_messages_at_once_on_nats_each_in_its_own_trace() {
    let app = MessagingApp::new(Broker::Nats, "", None);
    let _spindle = app.start();
    let client = nats_client().await;
    let subject = app.subject("together");
    let trace_ids: Vec<String> = (0..8)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let requests = trace_ids.iter().enumerate().map(|(i, trace_id)| {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{trace_id}-b7ad6b7169203331-01").as_str(),
        );
        client.request_with_headers(subject.clone(), headers, i.to_string().into())
    });
    let replies = futures::future::join_all(requests).await;
    let mut bodies = Vec::new();
    for (reply, trace_id) in replies.into_iter().zip(&trace_ids) {
        let reply = reply.expect("the component answers every request");
        let traceparent = reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get("traceparent"))
            .map(|value| value.as_str().to_string())
            .unwrap_or_default();
        assert!(
            traceparent.contains(trace_id.as_str()),
            "the reply continues its own request's trace {trace_id}: {traceparent}"
        );
        bodies.push(String::from_utf8_lossy(&reply.payload).into_owned());
    }
    let most = most_at_once(&bodies);
    assert!(
        most >= 2,
        "one instance ran {most} message at a time: {bodies:?}"
    );
}

// --- wildcards -----------------------------------------------------------

async fn wildcard_subjects(broker: Broker) {
    let app = MessagingApp::new(broker, "", None);
    let spindle = app.start();
    let deep = app.subject("eu.orders.record");
    let outside = format!("{}-other.record", app.prefix);
    for subject in [&outside, &deep] {
        let reply = spindle.post(&format!("/publish/{subject}"), subject).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    let listing = wait_for_handled(&spindle, Duration::from_secs(10), |l| {
        entry_for(l, &deep).is_some()
    })
    .await;
    // Published before `deep`, on the same bus, so it would have arrived.
    assert!(
        entry_for(&listing, &outside).is_none(),
        "`{outside}` is not under `{}.>`: {listing}",
        app.prefix
    );
}

#[tokio::test]
async fn wildcard_subjects_in_process() {
    wildcard_subjects(Broker::InProcess).await;
}

#[tokio::test]
async fn wildcard_subjects_on_nats() {
    wildcard_subjects(Broker::Nats).await;
}

// --- retry and dead-letter ------------------------------------------------

async fn a_flaky_handler_is_delivered_three_times(
    broker: Broker,
    trigger_extra: &str,
) -> (MessagingApp, Spindle) {
    let app = MessagingApp::new(broker, trigger_extra, None);
    let spindle = app.start();
    let subject = app.subject("flaky");
    let reply = spindle.post(&format!("/publish/{subject}"), "wobbly").await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let listing = wait_for_handled(&spindle, Duration::from_secs(20), |l| {
        entry_for(l, &subject).is_some()
    })
    .await;
    assert_eq!(
        listing["deliveries"], 3,
        "two retries, then success: {listing}"
    );
    assert_eq!(listing["effects"], 1);
    (app, spindle)
}

#[tokio::test]
async fn a_handler_that_fails_twice_is_delivered_three_times_in_process() {
    a_flaky_handler_is_delivered_three_times(Broker::InProcess, "").await;
}

#[tokio::test]
async fn a_handler_that_fails_twice_is_delivered_three_times_and_acked_once_on_jetstream() {
    let (app, spindle) = a_flaky_handler_is_delivered_three_times(
        Broker::Nats,
        "durable = \"flaky\"\nack_wait = \"5s\"",
    )
    .await;
    let jetstream = jetstream::new(nats_client().await);
    let stream_name = jetstream
        .stream_by_subject(app.subject("flaky"))
        .await
        .expect("the stream spindle created");
    let stream = jetstream.get_stream(&stream_name).await.expect("stream");
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer("flaky")
        .await
        .expect("the durable consumer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.expect("consumer info").clone();
        // Three deliveries of one message; the last one acknowledged.
        if info.delivered.consumer_sequence == 3 && info.num_ack_pending == 0 {
            assert_eq!(info.ack_floor.stream_sequence, 1, "{info:?}");
            assert_eq!(info.num_pending, 0, "{info:?}");
            break;
        }
        assert!(Instant::now() < deadline, "consumer state: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listing = handled(&spindle).await;
    assert_eq!(
        listing["deliveries"], 3,
        "no further delivery after the ack: {listing}"
    );
    let _ = jetstream.delete_stream(&stream_name).await;
}

async fn rejected_messages_are_dead_lettered(broker: Broker) {
    let app = MessagingApp::new(broker, "", None);
    let spindle = app.start();
    let subject = app.subject("reject");
    let dead_subject = format!("dead.{}", app.prefix);
    let mut watcher = match broker {
        Broker::Nats => Some(watch(&dead_subject).await),
        Broker::InProcess => None,
    };
    let reply = spindle.post(&format!("/publish/{subject}"), "poison").await;
    assert_eq!(reply.status, 202, "{}", reply.body);

    // The dead-letter subject is itself consumed by the component, which
    // records the reason header.
    let listing = wait_for_handled(&spindle, Duration::from_secs(10), |l| {
        entry_for(l, &dead_subject).is_some()
    })
    .await;
    let entry = entry_for(&listing, &dead_subject).expect("dead-lettered");
    assert_eq!(entry["body"], "poison");
    assert_eq!(entry["reason"], "rejected: cannot take poison");
    assert!(entry_for(&listing, &subject).is_none());
    assert_eq!(
        listing["deliveries"], 2,
        "one delivery, no retry, then the dead letter: {listing}"
    );

    if let Some((_client, watcher)) = watcher.as_mut() {
        let message = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .expect("the dead letter on NATS in time")
            .expect("a message");
        let headers = message.headers.expect("headers");
        assert_eq!(
            headers.get("x-test").map(|v| v.as_str()),
            Some("yes"),
            "original headers kept"
        );
        assert_eq!(
            headers.get("spindle-original-subject").map(|v| v.as_str()),
            Some(subject.as_str())
        );
        assert!(headers.get("spindle-dead-letter-reason").is_some());
    }
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_in_process() {
    rejected_messages_are_dead_lettered(Broker::InProcess).await;
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_on_nats() {
    rejected_messages_are_dead_lettered(Broker::Nats).await;
}

#[tokio::test]
async fn a_message_that_runs_out_of_deliveries_is_dead_lettered_with_the_reason() {
    let app = MessagingApp::new(Broker::InProcess, "max_deliver = 2", None);
    let spindle = app.start();
    let reply = spindle
        .post(&format!("/publish/{}", app.subject("flaky")), "wobbly")
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let dead_subject = format!("dead.{}", app.prefix);
    let listing = wait_for_handled(&spindle, Duration::from_secs(10), |l| {
        entry_for(l, &dead_subject).is_some()
    })
    .await;
    let entry = entry_for(&listing, &dead_subject).expect("dead-lettered");
    assert_eq!(
        entry["reason"], "gave up after 2 deliveries: the handler asked to retry",
        "{listing}"
    );
}

#[tokio::test]
async fn traps_and_multi_line_reasons_are_dead_lettered_on_one_line_on_jetstream() {
    let app = MessagingApp::new(
        Broker::Nats,
        "durable = \"traps\"\nmax_deliver = 2\nack_wait = \"5s\"",
        None,
    );
    let spindle = app.start();
    for (kind, body) in [
        ("trap", "trapped"),
        ("lines", "two lines"),
        ("after", "fine"),
    ] {
        let reply = spindle
            .post(&format!("/publish/{}", app.subject(kind)), body)
            .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    let dead_subject = format!("dead.{}", app.prefix);
    let dead_letter = |listing: &Json, body: &str| {
        entries(listing)
            .into_iter()
            .find(|entry| entry["subject"] == dead_subject && entry["body"] == body)
    };
    let listing = wait_for_handled(&spindle, Duration::from_secs(30), |l| {
        dead_letter(l, "trapped").is_some()
            && dead_letter(l, "two lines").is_some()
            && entry_for(l, &app.subject("after")).is_some()
    })
    .await;
    let trapped = dead_letter(&listing, "trapped").expect("the trap dead-lettered");
    let reason = trapped["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("gave up after 2 deliveries") && !reason.contains('\n'),
        "{reason:?}"
    );
    let rejected = dead_letter(&listing, "two lines").expect("the reject dead-lettered");
    assert_eq!(rejected["reason"], "rejected: first line second line");
    // The guest's own panic is logged under `guest:`; the host has none.
    let stderr = spindle.stderr();
    assert!(
        !stderr
            .lines()
            .any(|line| line.contains("panicked") && !line.contains("guest:")),
        "the host panicked:\n{stderr}"
    );
}

#[tokio::test]
async fn a_reply_subject_naming_the_broker_api_is_refused_to_the_handler() {
    let app = MessagingApp::new(Broker::Nats, "", None);
    let spindle = app.start();
    let client = nats_client().await;
    // A sender may name any reply subject; the handler must not be made to
    // call JetStream's API (here: delete a stream) by answering it.
    client
        .publish_with_reply(
            app.subject("echo"),
            "$JS.API.STREAM.DELETE.ANY".to_string(),
            "hello".into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let dead_subject = format!("dead.{}", app.prefix);
    let listing = wait_for_handled(&spindle, Duration::from_secs(10), |l| {
        entry_for(l, &dead_subject).is_some()
    })
    .await;
    let entry = entry_for(&listing, &dead_subject).expect("dead-lettered");
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("SubjectDenied"), "{reason}");

    // Its own request's inbox it may still answer.
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(app.subject("echo"), "again".into()),
    )
    .await
    .expect("a reply in time")
    .expect("a reply");
    assert_eq!(reply.payload.as_ref(), b"echo: again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_busy_with_http_keeps_its_durable_events() {
    let app = MessagingApp::new(
        Broker::Nats,
        "durable = \"busy\"\nmax_deliver = 2\nack_wait = \"5s\"",
        None,
    );
    let manifest = app.app.manifest_path();
    let text = std::fs::read_to_string(&manifest).expect("read spin.toml");
    std::fs::write(
        &manifest,
        text.replace(
            "database = \"handler\"",
            "database = \"handler\"\nmax_concurrency = 2",
        ),
    )
    .expect("write spin.toml");
    let spindle = app.start();

    // Slow HTTP calls keep both admission slots taken, with more waiting.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = reqwest::Client::new();
    let loads: Vec<_> = (0..4)
        .map(|_| {
            let (http, stop, url) = (
                http.clone(),
                stop.clone(),
                format!("{}/slow", spindle.base_url()),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = http.get(&url).send().await;
                }
            })
        })
        .collect();

    let jetstream = jetstream::new(nats_client().await);
    let count = 500;
    let started = Instant::now();
    for index in 0..count {
        jetstream
            .publish(
                app.subject(&format!("n{index}")),
                format!("event {index}").into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let dead_subject = format!("dead.{}", app.prefix);
    // Polled with retries: under this load `/handled` may get a 503 too.
    let until = Instant::now() + Duration::from_secs(180);
    let listing = loop {
        let reply = spindle.get("/handled").await;
        if reply.status == 200 {
            let listing: Json = serde_json::from_str(&reply.body).expect("JSON from /handled");
            let dead = entries(&listing)
                .iter()
                .any(|e| e["subject"] == dead_subject);
            if entries(&listing).len() >= count || dead {
                break listing;
            }
        }
        assert!(
            Instant::now() < until,
            "not all handled in time: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{count} messages handled under HTTP load in {:?}",
        started.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for load in loads {
        let _ = load.await;
    }
    let dead: Vec<_> = entries(&listing)
        .into_iter()
        .filter(|entry| entry["subject"] == dead_subject)
        .collect();
    assert!(dead.is_empty(), "dead-lettered while busy: {dead:?}");
    assert_eq!(entries(&listing).len(), count);
}

// --- replicas on JetStream ----------------------------------------------

/// A fresh PostgreSQL database URL for this run (created by `spindle up`).
fn fresh_postgres_database() -> String {
    let server = postgres_url();
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    let run = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}/spindle_test_{}_messaging", &run[..12])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_a_durable_consumer_and_lose_nothing_when_one_is_killed() {
    const MESSAGES: usize = 1000;
    let database = fresh_postgres_database();
    let app = MessagingApp::new(
        Broker::Nats,
        "durable = \"workers\"\nack_wait = \"2s\"",
        Some(&database),
    );
    let first = app.start_replica("first");
    let mut second = app.start_replica("second");

    let jetstream = jetstream::new(nats_client().await);
    let mut acks = Vec::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        let mut headers = HeaderMap::new();
        headers.insert("spindle-message-id", format!("message-{index:04}").as_str());
        let ack = jetstream
            .publish_with_headers(app.subject("job"), headers, format!("job {index}").into())
            .await
            .expect("published to JetStream");
        acks.push(ack);
    }
    for ack in acks {
        ack.await.expect("stored by JetStream");
    }

    // Kill one replica while it is busy: what it fetched but did not ack
    // comes back to the other after the ack wait.
    let at_kill = wait_for_handled(&first, Duration::from_secs(60), |l| {
        l["effects"].as_u64().unwrap_or(0) >= 200
    })
    .await;
    assert!(
        at_kill["effects"].as_u64().unwrap_or(0) < MESSAGES as u64,
        "the kill should come midway: {}",
        at_kill["effects"]
    );
    let killed = std::process::Command::new("kill")
        .args(["-9", &second.pid().to_string()])
        .status()
        .expect("kill -9");
    assert!(killed.success());
    second.wait_for_exit(Duration::from_secs(10));

    let listing = wait_for_handled(&first, Duration::from_secs(120), |l| {
        l["effects"].as_u64() == Some(MESSAGES as u64)
    })
    .await;
    let handled = entries(&listing);
    assert_eq!(handled.len(), MESSAGES, "every message recorded once");
    let mut ids: Vec<&str> = handled.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES, "no message missing or doubled");
    let by_second = handled.iter().filter(|e| e["replica"] == "second").count();
    assert!(
        by_second > 0 && by_second < MESSAGES,
        "both replicas took a share: second handled {by_second}"
    );
    let deliveries = listing["deliveries"].as_u64().unwrap_or(0);
    assert!(deliveries >= MESSAGES as u64, "{listing}");

    if let Ok(name) = jetstream.stream_by_subject(app.subject("job")).await {
        let _ = jetstream.delete_stream(&name).await;
    }
}

/// Publishes `count` messages with ids `<tag>-<n>` through JetStream and
/// waits until each is stored.
async fn publish_stored(jetstream: &jetstream::Context, subject: &str, tag: &str, count: usize) {
    for index in 0..count {
        let mut headers = HeaderMap::new();
        headers.insert("spindle-message-id", format!("{tag}-{index}").as_str());
        jetstream
            .publish_with_headers(
                subject.to_string(),
                headers,
                format!("{tag} {index}").into(),
            )
            .await
            .expect("published")
            .await
            .expect("stored by JetStream");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_durable_trigger_keeps_consuming_after_nats_restarts() {
    let mut nats = PrivateNats::start();
    let app = MessagingApp::with_nats(Broker::Nats, &nats.url(), "durable = \"restart\"", None);
    let spindle = app.start();
    let subject = app.subject("job");

    let client = async_nats::connect(nats.url()).await.expect("connect");
    publish_stored(&jetstream::new(client), &subject, "before", 20).await;
    wait_for_handled(&spindle, Duration::from_secs(20), |l| l["effects"] == 20).await;

    nats.restart();
    // A new client: the test's own would also reconnect, but need not.
    let client = async_nats::connect(nats.url()).await.expect("reconnect");
    publish_stored(&jetstream::new(client), &subject, "after", 20).await;
    let listing = wait_for_handled(&spindle, Duration::from_secs(60), |l| l["effects"] == 40).await;
    assert_eq!(entries(&listing).len(), 40, "{listing}");
}

// --- one trace across HTTP and NATS ---------------------------------------

/// A span as the OTLP receiver saw it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
}

/// An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf), collecting
/// every span it is sent.
async fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans: std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>> = Default::default();
    let received = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let request =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let hex =
                    |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
                let mut spans = received.lock().expect("lock");
                for span in request
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    spans.push(ReceivedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: span.kind,
                    });
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("OTLP receiver") });
    (endpoint, spans)
}

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;
const SPAN_KIND_PRODUCER: i32 = 4;
const SPAN_KIND_CONSUMER: i32 = 5;

#[tokio::test(flavor = "multi_thread")]
async fn one_request_through_http_and_nats_is_one_trace() {
    let (endpoint, spans) = otlp_receiver().await;
    let app = MessagingApp::new(Broker::Nats, "", None);
    let spindle = app.start_with_env(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let subject = app.subject("record");
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let reply = reqwest::Client::new()
        .post(format!("{}/publish/{subject}", spindle.base_url()))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body("traced")
        .send()
        .await
        .expect("POST");
    assert_eq!(reply.status(), 202);

    // Spans arrive in batches, in the order they end.
    let until = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        let trace: Vec<ReceivedSpan> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|span| span.trace_id == caller_trace)
            .cloned()
            .collect();
        let consumer = trace.iter().find(|s| s.kind == SPAN_KIND_CONSUMER);
        if let Some(consumer) = consumer
            && trace.iter().any(|s| s.parent_span_id == consumer.span_id)
            && trace.iter().any(|s| s.kind == SPAN_KIND_SERVER)
        {
            break trace;
        }
        assert!(
            Instant::now() < until,
            "no complete trace; received: {:#?}",
            spans.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |what: &str, matches: &dyn Fn(&ReceivedSpan) -> bool| -> ReceivedSpan {
        trace
            .iter()
            .find(|span| matches(span))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} span in {trace:#?}"))
    };
    let server = find("server", &|s| s.kind == SPAN_KIND_SERVER);
    assert_eq!(server.name, "POST /...");
    assert_eq!(
        server.parent_span_id, caller_span,
        "the caller's traceparent is the server span's parent"
    );
    let http_call = find("component", &|s| {
        s.name == "call handler" && s.parent_span_id == server.span_id
    });
    let publish = find("publish", &|s| s.kind == SPAN_KIND_PRODUCER);
    assert_eq!(publish.name, format!("publish {subject}"));
    assert_eq!(
        publish.parent_span_id, http_call.span_id,
        "published from the component call"
    );
    let consumer = find("consumer", &|s| s.kind == SPAN_KIND_CONSUMER);
    assert_eq!(
        consumer.parent_span_id, publish.span_id,
        "consumed under the publish span"
    );
    let handler_call = find("consumer's component", &|s| {
        s.name == "call handler" && s.parent_span_id == consumer.span_id
    });
    // Its capability calls are its children: the delivery counter's upsert.
    let statement = find("SQL statement", &|s| {
        s.name == "sql INSERT" && s.parent_span_id == handler_call.span_id
    });
    assert_eq!(statement.kind, SPAN_KIND_CLIENT);
    // The handler recorded the same trace in the message it received.
    let listing = handled(&spindle).await;
    let recorded = entry_for(&listing, &subject).expect("recorded");
    let traceparent = recorded["traceparent"].as_str().unwrap_or_default();
    assert_eq!(
        traceparent,
        format!("00-{caller_trace}-{}-01", publish.span_id)
    );
}
