//! NATS restarted mid-load: the app's private JetStream server is killed and
//! started again (same port, same store) while orders run through the saga.
//! No event may be lost, placing an order must not need the broker (the
//! outbox takes the event), and `/ready` must say `bus` is down and recover
//! within 5 s of each restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::crash::kill_points;
use super::{Context, Readiness};
use crate::demo::{self, Client, DurableBackends, Ledger, Placed, Shopper};
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
         time (the order mix of crash-during-sagas), retried under their Idempotency-Key on 503; \
         and in each outage, once `/ready` names `bus`, one more order sent once, without retry"
    );
    outcome.faults = format!(
        "the app's NATS server (`nats-server -js`, its own store) killed (SIGKILL) and started \
         again {restarts} times at random points of the load, down {:.1} s each time",
        OUTAGE.as_secs_f64()
    );

    let mut backends = DurableBackends::start(context, NAME, POSTGRES).await?;
    let args = backends.host_args(context, NAME);
    let host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let client = Client::new(vec![host.url().to_string()])?;
    let ledger = Ledger::open(&client, users).await?;
    let shoppers = ledger.shoppers.clone();

    let started = Instant::now();
    let placing = {
        let (client, shoppers) = (client.clone(), shoppers.clone());
        tokio::spawn(async move {
            demo::place_orders(&client, &shoppers, orders, CONCURRENCY, NAME, RATE).await
        })
    };
    let load = Duration::from_secs_f64(orders as f64 / RATE);
    let (mut noticed, mut recovered, mut probes) = (Vec::new(), Vec::new(), Vec::new());
    for (outage, at) in kill_points(load, restarts).into_iter().enumerate() {
        tokio::time::sleep_until((started + at).into()).await;
        backends.nats.stop();
        let stopped = Instant::now();
        let bus_down =
            |status: u16, down: &[String]| status == 503 && down.iter().any(|d| d == "bus");
        let seen = host.await_readiness(bus_down, OUTAGE * 4).await;
        if seen.is_some() {
            probes.push(Probe::send(host.url(), &shoppers, outage).await);
        }
        noticed.push(seen);
        tokio::time::sleep_until((stopped + OUTAGE).into()).await;
        backends.nats.resume().await?;
        recovered.push(
            host.await_readiness(|status, _| status == 200, RECOVERY * 6)
                .await,
        );
    }
    let mut placed = placing.await??;

    check_probes(&mut outcome, &probes);
    // Every probe order goes into the ledger: one refused is placed now,
    // under its key, so that whatever it may have written is counted once.
    for probe in &probes {
        let order_id = match &probe.order_id {
            Some(order_id) => order_id.clone(),
            None => {
                client
                    .place_order(&shoppers[probe.shopper], &probe.basket, &probe.key)
                    .await?
            }
        };
        placed.push(Placed {
            shopper: probe.shopper,
            order_id,
        });
    }
    ledger
        .check(&mut outcome, &client, &backends.databases, &placed)
        .await?;
    let readiness = Readiness {
        fault: "outage",
        named: "`bus`",
        end: "restart",
        within: RECOVERY,
    };
    readiness.check(&mut outcome, &noticed, &recovered);
    check_answers(&mut outcome, &host).await;
    outcome.figure(
        "all settled and checked after",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    host.expect_no_panic(&mut outcome);
    Ok(outcome)
}

/// One order sent once, without retry, while the broker was down.
struct Probe {
    shopper: usize,
    key: String,
    basket: serde_json::Value,
    /// The status, or what went wrong, and the body.
    answer: String,
    /// Its id, when it was placed (201).
    order_id: Option<String>,
}

impl Probe {
    /// Places order `index` of the outages with a single request.
    async fn send(url: &str, shoppers: &[Shopper], index: usize) -> Probe {
        let shopper = index % shoppers.len();
        let key = format!("{NAME}-outage-{index}");
        let basket = demo::basket(index);
        let sent = reqwest::Client::new()
            .post(format!("{url}/orders"))
            .bearer_auth(&shoppers[shopper].token)
            .header("idempotency-key", &key)
            .json(&json!({ "items": basket }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let (answer, order_id) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let order_id = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|body| body["order_id"].as_str().map(str::to_string))
                    .filter(|_| status == 201);
                (format!("{status} {body}"), order_id)
            }
            Err(error) => (format!("no answer: {error}"), None),
        };
        Probe {
            shopper,
            key,
            basket,
            answer,
            order_id,
        }
    }
}

/// Placing an order writes it and its event to PostgreSQL only; the broker
/// being down must not stop it.
fn check_probes(outcome: &mut Outcome, probes: &[Probe]) {
    let refused: Vec<&str> = probes
        .iter()
        .filter(|probe| probe.order_id.is_none())
        .map(|probe| probe.answer.as_str())
        .collect();
    outcome.expect(
        "an order sent once while the broker is down is placed (201): the outbox, not the \
         broker, takes its event",
        !probes.is_empty() && refused.is_empty(),
        || {
            if probes.is_empty() {
                "no order was sent during an outage".to_string()
            } else {
                format!(
                    "{} of {} refused: {}",
                    refused.len(),
                    probes.len(),
                    refused.join(" | ")
                )
            }
        },
    );
    outcome.figure(
        "orders sent once during an outage / placed",
        format!("{} / {}", probes.len(), probes.len() - refused.len()),
    );
}

/// What the host answered over the whole run, by its own count: the load
/// retries 503s, so a 500 would otherwise go unseen in a read that is
/// simply asked again.
async fn check_answers(outcome: &mut Outcome, host: &Host) {
    let metrics = match reqwest::get(format!("{}/metrics", host.ops_url())).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let statuses = by_label(&metrics, "spindle_http_requests_total", "status");
    let listed = statuses
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    outcome.figure("HTTP answers by status (the host's `/metrics`)", &listed);
    let failed: f64 = statuses
        .iter()
        .filter(|(status, _)| status.starts_with('5') && status.as_str() != "503")
        .map(|(_, count)| count)
        .sum();
    outcome.expect(
        "no request answered with a 5xx other than 503, outages included",
        !statuses.is_empty() && failed == 0.0,
        || {
            if statuses.is_empty() {
                "`/metrics` counted no HTTP request".to_string()
            } else {
                listed.clone()
            }
        },
    );
    // Deliveries not acknowledged before a kill come again: work the
    // handlers must absorb without applying an event twice.
    let count = |name| by_label(&metrics, name, "").values().sum::<f64>() as u64;
    outcome.figure(
        "messages received / acknowledged / sent back / dead-lettered (the host's `/metrics`)",
        format!(
            "{} / {} / {} / {}",
            count("spindle_messages_received_total"),
            count("spindle_messages_acked_total"),
            count("spindle_messages_redelivered_total"),
            count("spindle_messages_dead_lettered_total")
        ),
    );
    let dead = count("spindle_messages_dead_lettered_total");
    outcome.expect(
        "no message dead-lettered by the NATS trigger",
        dead == 0,
        || format!("{dead} dead-lettered; see the host's log"),
    );
}

/// The sum of every series of the Prometheus metric `name` in `text`, by
/// the value of its label `label` (`""` when it has none).
pub(super) fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    let prefix = format!("{label}=\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let labels = rest.split_once('}').map_or("", |(labels, _)| labels);
        let value_of_label = labels
            .split([',', '{'])
            .find_map(|pair| pair.strip_prefix(prefix.as_str()))
            .and_then(|quoted| quoted.strip_suffix('"'))
            .unwrap_or("");
        *sums.entry(value_of_label.to_string()).or_default() += value;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::by_label;

    #[test]
    fn sums_a_metric_by_one_label() {
        let text = "# HELP spindle_http_requests_total x\n\
                    spindle_http_requests_total{component=\"orders\",route=\"/orders\",status=\"201\"} 3\n\
                    spindle_http_requests_total{component=\"orders\",route=\"/orders/...\",status=\"200\"} 4\n\
                    spindle_http_requests_total{component=\"users\",route=\"/users\",status=\"200\"} 1\n\
                    spindle_http_requests_total_other{status=\"500\"} 100\n";
        let sums = by_label(text, "spindle_http_requests_total", "status");
        assert_eq!(sums.len(), 2);
        assert_eq!(sums["200"], 5.0);
        assert_eq!(sums["201"], 3.0);
        let by_component = by_label(text, "spindle_http_requests_total", "component");
        assert_eq!(by_component["orders"], 7.0);
        let all = by_label(text, "spindle_http_requests_total", "");
        assert_eq!(all[""], 8.0);
    }
}
