//! Load generators for `benches/run`. Each prints one tab-separated result
//! line on stdout (what the script records) and its progress on stderr.
//!
//! - `nats-drive`: publishes messages with a reply subject, at most
//!   `--window` unanswered, and times until every reply is back.
//! - `nats-echo`: the native peer of the `nats-echo` guest: answers each
//!   message on its reply subject, in a queue group.
//! - `saga`: signs up users on the demo app, places orders and times each
//!   from its POST to its `order.confirmed` / `order.cancelled` event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

#[derive(Parser)]
#[command(about = "Load generators for benches/run")]
enum Command {
    /// Publishes `--messages` requests to `--subject`, times all replies.
    NatsDrive {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 256)]
        window: usize,
    },
    /// Answers every message on `--subject` with `echo: <body>`.
    NatsEcho {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        subject: String,
    },
    /// Orders through the demo app's saga.
    Saga {
        /// The demo app, e.g. http://127.0.0.1:3000.
        #[arg(long)]
        url: String,
        /// The app's NATS server, where the saga's final events go.
        #[arg(long)]
        nats: String,
        #[arg(long, default_value_t = 1000)]
        orders: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Orders are spread over this many users (each has a credit limit).
        #[arg(long, default_value_t = 10)]
        users: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::NatsDrive {
            nats,
            subject,
            messages,
            window,
        } => nats_drive(&nats, &subject, messages, window).await,
        Command::NatsEcho { nats, subject } => nats_echo(&nats, &subject).await,
        Command::Saga {
            url,
            nats,
            orders,
            concurrency,
            users,
        } => saga(&url, &nats, orders, concurrency, users).await,
    }
}

/// Prints `messages  seconds  messages/s` for a timed pass after a warm-up.
async fn nats_drive(
    url: &str,
    subject: &str,
    messages: usize,
    window: usize,
) -> anyhow::Result<()> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    round_trips(&client, subject, messages.min(1000), window).await?;
    let elapsed = round_trips(&client, subject, messages, window).await?;
    let seconds = elapsed.as_secs_f64();
    println!("{messages}\t{seconds:.3}\t{:.0}", messages as f64 / seconds);
    Ok(())
}

async fn round_trips(
    client: &async_nats::Client,
    subject: &str,
    messages: usize,
    window: usize,
) -> anyhow::Result<Duration> {
    let inbox = format!("bench.replies.{}", uuid::Uuid::new_v4().simple());
    let mut replies = client.subscribe(inbox.clone()).await?;
    client.flush().await?;
    let permits = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let publisher = {
        let (client, subject, permits) = (client.clone(), subject.to_string(), permits.clone());
        tokio::spawn(async move {
            for index in 0..messages {
                permits.acquire().await?.forget();
                let body = format!("message {index}");
                client
                    .publish_with_reply(subject.clone(), inbox.clone(), body.into())
                    .await?;
            }
            client.flush().await?;
            anyhow::Ok(())
        })
    };
    for received in 0..messages {
        match tokio::time::timeout(Duration::from_secs(30), replies.next()).await {
            Ok(Some(_)) => permits.add_permits(1),
            _ => bail!("only {received} of {messages} replies within 30 s of the last"),
        }
    }
    publisher.await??;
    Ok(started.elapsed())
}

async fn nats_echo(url: &str, subject: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let mut messages = client
        .queue_subscribe(subject.to_string(), "echo".into())
        .await?;
    client.flush().await?;
    println!("Ready");
    while let Some(message) = messages.next().await {
        if let Some(reply) = message.reply {
            let mut body = b"echo: ".to_vec();
            body.extend_from_slice(&message.payload);
            client.publish(reply, body.into()).await?;
        }
    }
    Ok(())
}

/// Prints `orders  seconds  orders/s  p50_ms  p99_ms  confirmed  cancelled`.
async fn saga(
    url: &str,
    nats: &str,
    orders: usize,
    concurrency: usize,
    users: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut tokens = Vec::new();
    for _ in 0..users {
        tokens.push(sign_up(&http, url).await?);
    }
    for token in &tokens {
        wait_for_account(&http, url, token).await?;
    }
    eprintln!("{users} users signed up, accounts open");

    let settled = listen_for_outcomes(nats).await?;
    let placed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(orders);
    for index in 0..orders {
        let permit = permits.clone().acquire_owned().await?;
        let (http, url, token, placed) = (
            http.clone(),
            url.to_string(),
            tokens[index % tokens.len()].clone(),
            placed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let order_id = place_order(&http, &url, &token).await?;
            placed.lock().await.insert(order_id, sent);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    eprintln!(
        "{orders} orders placed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    let placed = placed.lock().await.clone();
    loop {
        let done = settled
            .lock()
            .await
            .keys()
            .filter(|id| placed.contains_key(*id))
            .count();
        if done == placed.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {done} of {} orders settled within 180 s",
                placed.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = settled.lock().await;
    let mut latencies: Vec<f64> = Vec::with_capacity(orders);
    let (mut confirmed, mut last) = (0, started);
    for (order_id, sent) in &placed {
        let (at, was_confirmed) = settled[order_id];
        latencies.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
        confirmed += usize::from(was_confirmed);
        last = last.max(at);
    }
    latencies.sort_by(f64::total_cmp);
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let seconds = last.duration_since(started).as_secs_f64();
    println!(
        "{orders}\t{seconds:.3}\t{:.1}\t{:.1}\t{:.1}\t{confirmed}\t{}",
        orders as f64 / seconds,
        percentile(0.5),
        percentile(0.99),
        orders - confirmed
    );
    Ok(())
}

type Outcomes = Arc<Mutex<HashMap<String, (Instant, bool)>>>;

/// When each order's final event was seen, and whether it was confirmed.
async fn listen_for_outcomes(url: &str) -> anyhow::Result<Outcomes> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let confirmed = client.subscribe("order.confirmed").await?;
    let cancelled = client.subscribe("order.cancelled").await?;
    client.flush().await?;
    let outcomes: Outcomes = Arc::default();
    let recorded = outcomes.clone();
    tokio::spawn(async move {
        let _client = client;
        let mut events = futures::stream::select(confirmed, cancelled);
        while let Some(event) = events.next().await {
            let at = Instant::now();
            let Ok(body) = serde_json::from_slice::<Value>(&event.payload) else {
                continue;
            };
            if let Some(order_id) = body["order_id"].as_str() {
                let was_confirmed = event.subject.as_str() == "order.confirmed";
                recorded
                    .lock()
                    .await
                    .entry(order_id.to_string())
                    .or_insert((at, was_confirmed));
            }
        }
    });
    Ok(outcomes)
}

async fn sign_up(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "benchmark password";
    let reply = http
        .post(format!("{url}/auth/signup"))
        .json(&json!({ "email": email, "password": password, "name": "bench" }))
        .send()
        .await?;
    if reply.status() != 201 {
        bail!("sign-up: {} {}", reply.status(), reply.text().await?);
    }
    let session: Value = http
        .post(format!("{url}/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await?
        .json()
        .await?;
    session["token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("login gave no token: {session}"))
}

async fn wait_for_account(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = http
            .get(format!("{url}/payments/account"))
            .bearer_auth(token)
            .send()
            .await?;
        if reply.status() == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no payment account within 60 s: {}", reply.status());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn place_order(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<String> {
    let reply = http
        .post(format!("{url}/orders"))
        .bearer_auth(token)
        .json(&json!({ "items": [{ "sku": "CABL-003", "quantity": 1 }] }))
        .send()
        .await?;
    if reply.status() != 201 {
        bail!("order: {} {}", reply.status(), reply.text().await?);
    }
    let order: Value = reply.json().await?;
    order["order_id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no order_id in {order}"))
}
