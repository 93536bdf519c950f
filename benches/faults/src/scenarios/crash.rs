//! Crash during sagas: orders from many users while the host is killed
//! (SIGKILL) at random points and restarted; afterwards the ledger must add
//! up exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::Context;
use crate::demo::{self, Client, DurableBackends};
use crate::host::Host;
use crate::report::Outcome;
use crate::services::POSTGRES;

const NAME: &str = "crash-during-sagas";
/// Orders placed at once, as many clients would.
const CONCURRENCY: usize = 32;

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let orders = context.scale(1000);
    let kills = context.scale(10).max(2);
    let users = 20;
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{orders} orders from {users} users, {CONCURRENCY} at a time, each retried under its \
         Idempotency-Key until a host answers; baskets that confirm, run out of credit, run out \
         of stock (the lamp: 3 in stock) and are over every credit limit (the laptop)"
    );
    outcome.faults = format!(
        "{kills} × `kill -9` of the host at random points 0.5–3 s apart, while orders are placed \
         and while their sagas run; restarted each time on the same PostgreSQL databases and \
         NATS JetStream"
    );

    let backends = DurableBackends::start(context, NAME, POSTGRES).await?;
    let args = backends.host_args(context, NAME);
    let mut host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let client = Client::new(vec![host.url().to_string()])?;
    let shoppers = Arc::new(demo::shoppers(&client, users).await?);
    let stock_before = client.catalogue().await?;

    let started = Instant::now();
    let placing = {
        let (client, shoppers) = (client.clone(), shoppers.clone());
        tokio::spawn(async move {
            demo::place_orders(&client, &shoppers, orders, CONCURRENCY, NAME).await
        })
    };
    let mut restarts = Vec::with_capacity(kills);
    let mut killed_while_placing = 0;
    for _ in 0..kills {
        let pause = rand::rng().random_range(500..3000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        killed_while_placing += usize::from(!placing.is_finished());
        let down = Instant::now();
        host.crash_and_restart().await?;
        restarts.push(down.elapsed());
        client.set_endpoints(vec![host.url().to_string()]);
    }
    let placed = placing.await??;
    let placing_took = started.elapsed();

    demo::check_ledger(
        &mut outcome,
        &client,
        &backends.databases,
        &shoppers,
        &placed,
        &stock_before,
    )
    .await?;
    outcome.figure("kills", kills);
    outcome.figure(
        "kills while orders were still being placed",
        killed_while_placing,
    );
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
    let panics = host.log_lines_containing("panicked");
    outcome.expect("no panic in the host's log", panics.is_empty(), || {
        panics.join(" | ")
    });
    Ok(outcome)
}

/// The middle value (the upper one of an even count).
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
