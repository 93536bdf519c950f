//! Crash during sagas: orders from many users while the host is killed
//! (SIGKILL) at random points and restarted; afterwards the ledger must add
//! up exactly.

use std::time::{Duration, Instant};

use rand::Rng;

use super::Context;
use crate::demo::{self, Client, DurableBackends, Ledger};
use crate::host::Host;
use crate::report::Outcome;
use crate::services::POSTGRES;

const NAME: &str = "crash-during-sagas";
/// Orders placed at once, as many clients would.
const CONCURRENCY: usize = 32;
/// Orders started per second: slow enough that the load spans every kill.
const RATE: f64 = 50.0;

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let orders = context.scale(1000);
    let kills = context.scale(10).max(2);
    let users = 20;
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{orders} orders from {users} users, {RATE} started a second, at most {CONCURRENCY} at \
         a time, each retried under its \
         Idempotency-Key until a host answers; baskets that confirm, run out of credit, run out \
         of stock (the lamp: 3 in stock) and are over every credit limit (the laptop)"
    );
    outcome.faults = format!(
        "{kills} × `kill -9` of the host at random points of the load (one in each {kills}th of \
         it), while orders are placed and their sagas run; restarted each time on the same \
         PostgreSQL databases and NATS JetStream"
    );

    let backends = DurableBackends::start(context, NAME, POSTGRES).await?;
    let args = backends.host_args(context, NAME);
    let mut host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let client = Client::new(vec![host.url().to_string()])?;
    let ledger = Ledger::open(&client, users).await?;
    let shoppers = ledger.shoppers.clone();

    let started = Instant::now();
    let placing = {
        let (client, shoppers) = (client.clone(), shoppers.clone());
        tokio::spawn(async move {
            let placed =
                demo::place_orders(&client, &shoppers, orders, CONCURRENCY, NAME, RATE).await?;
            anyhow::Ok((placed, started.elapsed()))
        })
    };
    let load = Duration::from_secs_f64(orders as f64 / RATE);
    let mut restarts = Vec::with_capacity(kills);
    let mut kill_times = Vec::with_capacity(kills);
    for at in kill_points(load, kills) {
        tokio::time::sleep_until((started + at).into()).await;
        kill_times.push(format!("{:.1}", started.elapsed().as_secs_f64()));
        let down = Instant::now();
        host.crash_and_restart().await?;
        restarts.push(down.elapsed());
        client.set_endpoints(vec![host.url().to_string()]);
    }
    let (placed, placing_took) = placing.await??;

    ledger
        .check(&mut outcome, &client, &backends.databases, &placed)
        .await?;
    outcome.figure("kills, at (s after the first order)", kill_times.join(", "));
    outcome.figure(
        "restart to serving, median / max",
        format!(
            "{:.0} ms / {:.0} ms",
            median(&restarts).as_secs_f64() * 1000.0,
            restarts
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        ),
    );
    outcome.figure(
        "orders placed in",
        format!("{:.1} s", placing_took.as_secs_f64()),
    );
    outcome.figure(
        "all settled and checked after",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    host.expect_no_panic(&mut outcome);
    Ok(outcome)
}

/// `count` random points of `span`, one in each `count`th of it, so that the
/// faults hit the whole load and never come all at once.
pub fn kill_points(span: Duration, count: usize) -> Vec<Duration> {
    let slot = span / count as u32;
    (0..count as u32)
        .map(|index| slot * index + slot.mul_f64(rand::rng().random_range(0.1..0.9)))
        .collect()
}

/// The middle value (the upper one of an even count).
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
