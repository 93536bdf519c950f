//! Two replicas under one NATS and one PostgreSQL: two `spindle up`
//! processes of the whole demo app share the databases and the JetStream
//! consumers; one is killed and restarted repeatedly during the load. The
//! ledger must add up as with one host, and both replicas must have worked.

use std::time::{Duration, Instant};

use rand::Rng;

use super::Context;
use super::crash::kill_points;
use crate::demo::{self, Client, DurableBackends, Ledger};
use crate::host::Host;
use crate::report::Outcome;
use crate::services::POSTGRES;

const NAME: &str = "two-replicas";
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
         a time, spread over both replicas (the order mix of crash-during-sagas)"
    );
    outcome.faults = format!(
        "two `spindle up` of the whole app on the same PostgreSQL databases and NATS JetStream; \
         replica b `kill -9`'d {kills} times at random points of the load, down 0.3–1 s each \
         time while replica a serves alone"
    );

    let backends = DurableBackends::start(context, NAME, POSTGRES).await?;
    let a_args = backends.host_args(context, "replica-a");
    let b_args = backends.host_args(context, "replica-b");
    let a = Host::start("replica-a", context.spindle(), &a_args, context.work()).await?;
    let mut b = Host::start("replica-b", context.spindle(), &b_args, context.work()).await?;
    let both = |a: &Host, b: &Host| vec![a.url().to_string(), b.url().to_string()];
    let client = Client::new(both(&a, &b))?;
    let ledger = Ledger::open(&client, users).await?;
    let shoppers = ledger.shoppers.clone();

    let started = Instant::now();
    let placing = {
        let (client, shoppers) = (client.clone(), shoppers.clone());
        tokio::spawn(async move {
            demo::place_orders(&client, &shoppers, orders, CONCURRENCY, NAME, RATE).await
        })
    };
    // What b did before each kill: its counters restart from zero.
    let mut b_work = Work::default();
    let load = Duration::from_secs_f64(orders as f64 / RATE);
    for at in kill_points(load, kills) {
        tokio::time::sleep_until((started + at).into()).await;
        b_work.add(&Work::of(&b).await);
        client.set_endpoints(vec![a.url().to_string()]);
        b.kill();
        let down = rand::rng().random_range(300..1000);
        tokio::time::sleep(Duration::from_millis(down)).await;
        b.restart().await?;
        client.set_endpoints(both(&a, &b));
    }
    let placed = placing.await??;

    ledger
        .check(&mut outcome, &client, &backends.databases, &placed)
        .await?;
    b_work.add(&Work::of(&b).await);
    let a_work = Work::of(&a).await;
    outcome.figure(
        "replica a: HTTP requests / messages acked",
        format!("{} / {}", a_work.requests, a_work.messages),
    );
    outcome.figure(
        "replica b (summed over its lives): HTTP requests / messages acked",
        format!("{} / {}", b_work.requests, b_work.messages),
    );
    outcome.expect(
        "both replicas served requests and handled messages",
        a_work.requests > 0.0
            && a_work.messages > 0.0
            && b_work.requests > 0.0
            && b_work.messages > 0.0,
        || format!("a {a_work:?}, b {b_work:?}"),
    );
    outcome.figure("kills of replica b", kills);
    outcome.figure(
        "all settled and checked after",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    let panics: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|host| host.host_panics())
        .collect();
    outcome.expect(
        "no panic in either replica's log",
        panics.is_empty(),
        || panics.join(" | "),
    );
    Ok(outcome)
}

/// What a replica's metrics say it did.
#[derive(Debug, Default)]
struct Work {
    requests: f64,
    messages: f64,
}

impl Work {
    /// Reads the host's `/metrics`; zero when it does not answer.
    async fn of(host: &Host) -> Work {
        let text = match reqwest::get(format!("{}/metrics", host.ops_url())).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Work {
            requests: sum(&text, "spindle_http_requests_total"),
            messages: sum(&text, "spindle_messages_acked_total"),
        }
    }

    fn add(&mut self, other: &Work) {
        self.requests += other.requests;
        self.messages += other.messages;
    }
}

/// The sum of every series of the Prometheus metric `name` in `text`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum;

    #[test]
    fn sums_every_series_of_one_metric() {
        let text = "# HELP spindle_messages_acked_total x\n\
                    spindle_messages_acked_total{component=\"saga\"} 3\n\
                    spindle_messages_acked_total{component=\"orders\"} 4\n\
                    spindle_messages_acked_total_other 100\n";
        assert_eq!(sum(text, "spindle_messages_acked_total"), 7.0);
    }
}
