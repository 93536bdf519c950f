//! Orders through the demo app's saga, timed from the moment each order was
//! meant to be placed to its final event, and hop by hop.
//!
//! Two ways to pace the orders:
//! - closed loop (`--concurrency`): at most that many POSTs in flight, the
//!   next sent when one is answered; gives the throughput the app sustains.
//! - open loop (`--rate`): an order every 1/rate seconds whether or not the
//!   earlier ones were answered. Latency counts from the moment the order
//!   was due, not from when the client got round to sending it, so a slow
//!   server shows as latency instead of as a slower client
//!   (no coordinated omission).
//!
//! The hops come from watching every NATS message of the app: each order's
//! `order.created`, its `inventory.reserve` and `payments.charge` requests
//! and their replies, and its final event are timed as they pass.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// How orders are sent.
#[derive(Clone, Copy, Debug)]
pub enum Pacing {
    /// At most this many orders being placed at once.
    Closed { concurrency: usize },
    /// This many orders per second, on schedule.
    Open { rate: f64 },
}

/// The points of an order's path that are timed, in order.
const POINTS: [&str; 8] = [
    "due",
    "placed",
    "order.created",
    "inventory.reserve",
    "inventory.reserve reply",
    "payments.charge",
    "payments.charge reply",
    "final event",
];

/// The hops between consecutive points, named for what takes the time.
const HOPS: [&str; 7] = [
    "POST /orders answered (HTTP, GetUser over gRPC, transaction with outbox)",
    "orders' outbox relay → order.created on JetStream",
    "saga consumer delivery, saga stored → inventory.reserve",
    "inventory handles the reservation and replies",
    "saga stores the step → payments.charge",
    "payments handles the charge and replies",
    "saga stores the outcome, outbox relay → final event",
];

/// When each point of each order was seen, by order id.
#[derive(Default)]
struct Timeline {
    orders: HashMap<String, [Option<Instant>; POINTS.len()]>,
    /// A request's reply subject → (order id, the reply's point).
    replies: HashMap<String, (String, usize)>,
    confirmed: HashMap<String, bool>,
}

impl Timeline {
    fn mark(&mut self, order_id: &str, point: usize, at: Instant) {
        let points = self.orders.entry(order_id.to_string()).or_default();
        points[point].get_or_insert(at);
    }

    /// Records what `message` says about an order, if anything.
    fn observe(&mut self, message: &async_nats::Message, at: Instant) {
        let subject = message.subject.as_str();
        if let Some((order_id, point)) = self.replies.remove(subject) {
            return self.mark(&order_id, point, at);
        }
        let point = match subject {
            "order.created" => 2,
            "inventory.reserve" => 3,
            "payments.charge" => 5,
            "order.confirmed" | "order.cancelled" => 7,
            _ => return,
        };
        let Ok(body) = serde_json::from_slice::<Value>(&message.payload) else {
            return;
        };
        let Some(order_id) = body["order_id"].as_str() else {
            return;
        };
        // Events carry a reply subject too (JetStream's acknowledgement),
        // so only the two commands' replies are followed.
        if let (3 | 5, Some(reply)) = (point, &message.reply) {
            self.replies
                .insert(reply.to_string(), (order_id.to_string(), point + 1));
        }
        if point == 7 {
            self.confirmed
                .entry(order_id.to_string())
                .or_insert(subject == "order.confirmed");
        }
        self.mark(order_id, point, at);
    }

    fn settled(&self, order_id: &str) -> Option<Instant> {
        self.orders.get(order_id).and_then(|points| points[7])
    }
}

/// Watches every message on `nats` into a shared timeline.
async fn watch(nats: &str) -> anyhow::Result<Arc<Mutex<Timeline>>> {
    let client = async_nats::connect(nats)
        .await
        .context("connecting to NATS")?;
    // One subscription, so requests and their replies arrive in the order
    // the server routed them.
    let mut messages = client.subscribe(">").await?;
    client.flush().await?;
    let timeline: Arc<Mutex<Timeline>> = Arc::default();
    let recorded = timeline.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(message) = messages.next().await {
            let at = Instant::now();
            lock(&recorded).observe(&message, at);
        }
    });
    Ok(timeline)
}

fn lock(timeline: &Mutex<Timeline>) -> std::sync::MutexGuard<'_, Timeline> {
    timeline
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Signs up `users` users, places `orders` orders paced as asked, waits for
/// every final event and prints
/// `orders  seconds  orders/s  p50_ms  p99_ms  confirmed  cancelled`;
/// with `hops`, writes each hop's `name  p50_ms  p99_ms  mean_ms` there.
pub async fn run(
    url: &str,
    nats: &str,
    orders: usize,
    users: usize,
    pacing: Pacing,
    hops: Option<&Path>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut tokens = Vec::new();
    for _ in 0..users {
        tokens.push(sign_up(&http, url).await?.1);
    }
    for token in &tokens {
        wait_for_account(&http, url, token).await?;
    }
    eprintln!("{users} users signed up, accounts open");

    let timeline = watch(nats).await?;
    let started = Instant::now();
    let placed = place_all(&http, url, &tokens, orders, pacing, &timeline).await?;
    eprintln!(
        "{orders} orders placed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_until_settled(&timeline, &placed).await?;

    let timeline = lock(&timeline);
    let mut latencies = Vec::with_capacity(orders);
    let (mut confirmed, mut last) = (0, started);
    for order_id in &placed {
        let points = &timeline.orders[order_id];
        let (due, settled) = (
            points[0].context("no due time")?,
            points[7].context("unsettled")?,
        );
        latencies.push(millis(settled - due));
        confirmed += usize::from(timeline.confirmed.get(order_id) == Some(&true));
        last = last.max(settled);
    }
    let seconds = last.duration_since(started).as_secs_f64();
    println!(
        "{orders}\t{seconds:.3}\t{:.1}\t{:.1}\t{:.1}\t{confirmed}\t{}",
        orders as f64 / seconds,
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
        orders - confirmed
    );
    if let Some(path) = hops {
        write_hops(&timeline, &placed, path)?;
    }
    Ok(())
}

/// Places the orders; returns their ids, each with its due and placed
/// times marked in the timeline.
async fn place_all(
    http: &reqwest::Client,
    url: &str,
    tokens: &[String],
    orders: usize,
    pacing: Pacing,
    timeline: &Arc<Mutex<Timeline>>,
) -> anyhow::Result<Vec<String>> {
    let permits = match pacing {
        Pacing::Closed { concurrency } => Some(Arc::new(Semaphore::new(concurrency))),
        Pacing::Open { .. } => None,
    };
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(orders);
    for index in 0..orders {
        let permit = match &permits {
            Some(permits) => Some(permits.clone().acquire_owned().await?),
            None => None,
        };
        let due = match pacing {
            Pacing::Open { rate } => {
                let due = started + Duration::from_secs_f64(index as f64 / rate);
                tokio::time::sleep_until(due).await;
                due.into_std()
            }
            Pacing::Closed { .. } => Instant::now(),
        };
        let (http, url, token, timeline) = (
            http.clone(),
            url.to_string(),
            tokens[index % tokens.len()].clone(),
            timeline.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let order_id = place_order(&http, &url, &token).await?;
            let mut timeline = lock(&timeline);
            timeline.mark(&order_id, 0, due);
            timeline.mark(&order_id, 1, Instant::now());
            anyhow::Ok(order_id)
        }));
    }
    let mut placed = Vec::with_capacity(orders);
    for task in tasks {
        placed.push(task.await??);
    }
    Ok(placed)
}

async fn wait_until_settled(timeline: &Mutex<Timeline>, placed: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = {
            let timeline = lock(timeline);
            placed
                .iter()
                .filter(|id| timeline.settled(id).is_some())
                .count()
        };
        if done == placed.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {done} of {} orders settled within 180 s",
                placed.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each hop's p50, p99 and mean over the confirmed orders that were seen at
/// every point (cancelled ones skip the charge).
fn write_hops(timeline: &Timeline, placed: &[String], path: &Path) -> anyhow::Result<()> {
    let mut durations: Vec<Vec<f64>> = vec![Vec::new(); HOPS.len()];
    for order_id in placed {
        let Some(points) = timeline.orders[order_id]
            .iter()
            .copied()
            .collect::<Option<Vec<Instant>>>()
        else {
            continue;
        };
        for (hop, pair) in points.windows(2).enumerate() {
            durations[hop].push(millis(pair[1].saturating_duration_since(pair[0])));
        }
    }
    let mut table = String::new();
    for (name, mut values) in HOPS.iter().zip(durations) {
        if values.is_empty() {
            bail!("no order was seen at every point of its path");
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let (p50, p99) = (percentile(&mut values, 0.5), percentile(&mut values, 0.99));
        table.push_str(&format!("{name}\t{p50:.1}\t{p99:.1}\t{mean:.1}\n"));
    }
    std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
}

/// Signs a new user up and logs in; returns its user id and token.
pub async fn sign_up(http: &reqwest::Client, url: &str) -> anyhow::Result<(String, String)> {
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
    let account: Value = reply.json().await?;
    let user_id = account["user_id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("sign-up gave no user_id: {account}"))?;
    let session: Value = http
        .post(format!("{url}/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await?
        .json()
        .await?;
    let token = session["token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("login gave no token: {session}"))?;
    Ok((user_id, token))
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
