//! NATS restarted mid-load: the app's private JetStream server is killed and
//! started again (same port, same store) while orders run through the saga.
//! No event may be lost, and `/ready` must say `bus` is down and recover
//! within 5 s of each restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Context;
use super::crash::{kill_points, median};
use crate::demo::{self, Client, DurableBackends};
use crate::host::Host;
use crate::report::Outcome;
use crate::services::POSTGRES;

const NAME: &str = "nats-restarts";
const CONCURRENCY: usize = 32;
/// Orders started per second: the load spans every restart.
const RATE: f64 = 25.0;
/// How long the broker stays down each time.
const OUTAGE: Duration = Duration::from_millis(1500);
/// How soon after the broker is back `/ready` must say so.
const RECOVERY: Duration = Duration::from_secs(5);

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let orders = context.scale(500);
    let restarts = context.scale(5).max(2);
    let users = 20;
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{orders} orders from {users} users, {RATE} started a second, at most {CONCURRENCY} at a \
         time (the order mix of crash-during-sagas), retried under their Idempotency-Key on 503"
    );
    outcome.faults = format!(
        "the app's NATS server (`nats-server -js`, its own store) killed and started again \
         {restarts} times at random points of the load, down {:.1} s each time",
        OUTAGE.as_secs_f64()
    );

    let mut backends = DurableBackends::start(context, NAME, POSTGRES).await?;
    let args = backends.host_args(context, NAME);
    let host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let client = Client::new(vec![host.url().to_string()])?;
    let shoppers = Arc::new(demo::shoppers(&client, users).await?);
    let stock_before = client.catalogue().await?;

    let started = Instant::now();
    let placing = {
        let (client, shoppers) = (client.clone(), shoppers.clone());
        tokio::spawn(async move {
            demo::place_orders_paced(&client, &shoppers, orders, CONCURRENCY, NAME, Some(RATE))
                .await
        })
    };
    let load = Duration::from_secs_f64(orders as f64 / RATE);
    let (mut noticed, mut recovered) = (Vec::new(), Vec::new());
    for at in kill_points(load, restarts) {
        tokio::time::sleep_until((started + at).into()).await;
        backends.nats.stop();
        let stopped = Instant::now();
        let bus_down =
            |status: u16, down: &[String]| status == 503 && down.iter().any(|d| d == "bus");
        noticed.push(host.await_readiness(bus_down, OUTAGE * 4).await);
        tokio::time::sleep_until((stopped + OUTAGE).into()).await;
        backends.nats.resume().await?;
        recovered.push(
            host.await_readiness(|status, _| status == 200, RECOVERY * 6)
                .await,
        );
    }
    let placed = placing.await??;

    demo::check_ledger(
        &mut outcome,
        &client,
        &backends.databases,
        &shoppers,
        &placed,
        &stock_before,
    )
    .await?;
    let noticed_all = noticed.iter().all(Option::is_some);
    outcome.expect(
        "`/ready` answered 503 naming `bus` during every outage",
        noticed_all,
        || {
            format!(
                "{} of {restarts} outages went unreported",
                noticed.iter().filter(|n| n.is_none()).count()
            )
        },
    );
    let in_time = recovered
        .iter()
        .all(|r| r.is_some_and(|took| took <= RECOVERY));
    outcome.expect(
        format!("`/ready` back to 200 within {RECOVERY:?} of every restart"),
        in_time,
        || format!("recovery times: {}", times(&recovered)),
    );
    outcome.figure("outage to `/ready` 503, each restart", times(&noticed));
    outcome.figure(
        "broker back to `/ready` 200, each restart",
        times(&recovered),
    );
    let recovered: Vec<Duration> = recovered.into_iter().flatten().collect();
    outcome.figure(
        "broker back to `/ready` 200, median",
        format!("{:.0} ms", median(&recovered).as_secs_f64() * 1000.0),
    );
    outcome.figure(
        "all settled and checked after",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    let panics = host.host_panics();
    outcome.expect("no panic in the host's log", panics.is_empty(), || {
        panics.join(" | ")
    });
    Ok(outcome)
}

/// `120 ms, 340 ms, never, …`.
fn times(durations: &[Option<Duration>]) -> String {
    durations
        .iter()
        .map(|took| match took {
            Some(took) => format!("{:.0} ms", took.as_secs_f64() * 1000.0),
            None => "never".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
