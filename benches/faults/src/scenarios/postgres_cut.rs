//! PostgreSQL unreachable: every database of the app goes through a TCP
//! proxy that is cut and restored while clients use the app. While it is
//! cut, requests must fail cleanly (503 with the `unavailable` error body,
//! never a 500, a hang or a dropped connection); afterwards nothing may be
//! half-written, and `/ready` must recover without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::nats_restart::by_label;
use super::{Context, Readiness};
use crate::demo::{self, Client, DurableBackends, Ledger, Placed, Shopper};
use crate::host::Host;
use crate::report::Outcome;
use crate::services::TcpProxy;

const NAME: &str = "postgres-cut";
/// Clients sending one request after another during the cuts.
const CLIENTS: usize = 16;
/// Each client's pause between requests: bounds the load.
const PAUSE: Duration = Duration::from_millis(50);
/// How long each cut lasts, and the service between cuts.
const CUT: Duration = Duration::from_secs(4);
const BETWEEN: Duration = Duration::from_secs(3);
/// Longer than any answer may take: a request still open then is a hang.
const HANG: Duration = Duration::from_secs(15);
/// How soon after the database is back `/ready` must say so.
const RECOVERY: Duration = Duration::from_secs(10);
const DURING_A_CUT: &str = "during a cut";
const REACHABLE: &str = "database reachable";

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let cuts = context.scale(3).max(2);
    let users = 10;
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{CLIENTS} clients, each sending one request after another ({} ms apart) without \
         retrying: order placements (each under its own Idempotency-Key), order reads and \
         catalogue reads",
        PAUSE.as_millis()
    );
    outcome.faults = format!(
        "every connection to PostgreSQL goes through a TCP proxy; cut {cuts} times for {} s \
         (open connections dropped, new ones refused), {} s of service between cuts",
        CUT.as_secs(),
        BETWEEN.as_secs()
    );

    let proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await?;
    let server = format!("postgres://postgres@{}", proxy.address());
    let backends = DurableBackends::start(context, NAME, &server).await?;
    let args = backends.host_args(context, NAME);
    let host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let client = Client::new(vec![host.url().to_string()])?;
    let ledger = Ledger::open(&client, users).await?;
    let shoppers = ledger.shoppers.clone();
    let first = client
        .place_order(&shoppers[0], &demo::basket(0), &format!("{NAME}-first"))
        .await?;

    let tally = Arc::new(Tally::default());
    let load = Load {
        url: host.url().to_string(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(HANG)
            .build()?,
        shoppers: shoppers.clone(),
        known_order: first.clone(),
        tally: tally.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| tokio::spawn(load.clone().run(index, stop.clone())))
        .collect();
    let (noticed, recovered) = cut_and_restore(&proxy, &host, &tally, cuts).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await?;
    }
    drop(load);
    let tally = Arc::into_inner(tally)
        .context("the load clients still hold the tally")?
        .into_counts();

    check_answers(&mut outcome, &tally);
    let readiness = Readiness {
        fault: "cut",
        named: "a `database:` dependency",
        end: "restore",
        within: RECOVERY,
    };
    readiness.check(&mut outcome, &noticed, &recovered);
    let mut placed = vec![Placed {
        shopper: 0,
        order_id: first,
    }];
    placed.extend(tally.placed.iter().cloned());
    placed
        .extend(place_refused(&mut outcome, &client, &backends, &shoppers, &tally.refused).await?);
    check_nothing_half_written(&mut outcome, &backends, &placed)?;
    ledger
        .check(&mut outcome, &client, &backends.databases, &placed)
        .await?;
    check_dead_letters(&mut outcome, &host).await;
    host.expect_no_panic(&mut outcome);
    Ok(outcome)
}

/// Cuts the proxy `cuts` times, [`BETWEEN`] apart, for [`CUT`] each; how
/// long `/ready` took to name a database after each cut, and to answer 200
/// after each restore.
async fn cut_and_restore(
    proxy: &TcpProxy,
    host: &Host,
    tally: &Tally,
    cuts: usize,
) -> (Vec<Option<Duration>>, Vec<Option<Duration>>) {
    let (mut noticed, mut recovered) = (Vec::new(), Vec::new());
    for _ in 0..cuts {
        tokio::time::sleep(BETWEEN).await;
        tally.set_cut(true);
        proxy.cut();
        let cut_at = Instant::now();
        let database_down = |status: u16, down: &[String]| {
            status == 503 && down.iter().any(|d| d.starts_with("database:"))
        };
        noticed.push(host.await_readiness(database_down, CUT).await);
        tokio::time::sleep_until((cut_at + CUT).into()).await;
        proxy.restore();
        tally.set_cut(false);
        recovered.push(
            host.await_readiness(|status, _| status == 200, RECOVERY * 3)
                .await,
        );
    }
    tokio::time::sleep(BETWEEN).await;
    (noticed, recovered)
}

/// Every answer the load got, by whether the database was cut.
fn check_answers(outcome: &mut Outcome, tally: &Counts) {
    for ((during, what), count) in &tally.statuses {
        outcome.figure(format!("{during}: {what}"), count);
    }
    let unclean: Vec<String> = tally
        .statuses
        .iter()
        .filter(|((_, what), _)| !is_clean(what))
        .map(|((during, what), count)| format!("{count} × {what} ({during})"))
        .collect();
    outcome.expect(
        "every answer, during the cuts too, is a success or a 503 with the `unavailable` error \
         body: no 500, no other 4xx/5xx, no hang, no dropped connection",
        unclean.is_empty(),
        || unclean.join(", "),
    );
    let refused_during_cuts: usize = tally
        .statuses
        .iter()
        .filter(|((during, what), _)| *during == DURING_A_CUT && what.starts_with("503"))
        .map(|(_, count)| count)
        .sum();
    outcome.expect(
        "requests were refused with 503 while the database was cut",
        refused_during_cuts > 0,
        || "no 503 during any cut: the cuts did not reach the app".to_string(),
    );
    let mut waits = tally.waits_during_cuts.clone();
    waits.sort();
    let at = |fraction: f64| {
        let index = ((waits.len() as f64 * fraction) as usize).min(waits.len().saturating_sub(1));
        waits.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    outcome.figure(
        "time to answer during a cut, p50 / p99 / max",
        format!("{:.0} ms / {:.0} ms / {:.0} ms", at(0.5), at(0.99), at(1.0)),
    );
}

/// The demo's command triggers: core NATS request/reply, whose requester
/// (the saga) asks again until its deadline, so a command given up on while
/// the database is cut loses nothing. Events are JetStream deliveries that
/// nobody sends again: none may be given up on.
const COMMANDS: [&str; 2] = ["inventory.*", "payments.*"];

/// What the NATS trigger dead-lettered, by the host's own count.
async fn check_dead_letters(outcome: &mut Outcome, host: &Host) {
    let metrics = match reqwest::get(format!("{}/metrics", host.ops_url())).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let dead = by_label(&metrics, "spindle_messages_dead_lettered_total", "subject");
    let (commands, events): (Vec<_>, Vec<_>) = dead
        .iter()
        .filter(|(_, count)| **count > 0.0)
        .map(|(subject, count)| format!("{subject}: {count}"))
        .partition(|line| COMMANDS.iter().any(|c| line.starts_with(&format!("{c}:"))));
    outcome.figure(
        "commands given up on by the NATS trigger while cut (asked again by the saga)",
        if commands.is_empty() {
            "none".to_string()
        } else {
            commands.join(", ")
        },
    );
    outcome.expect(
        "no JetStream event dead-lettered by the NATS trigger",
        !metrics.is_empty() && events.is_empty(),
        || {
            if metrics.is_empty() {
                "`/metrics` did not answer".to_string()
            } else {
                events.join(", ")
            }
        },
    );
}

/// Sends every placement that did not get a 201 again under its key, now
/// that the database is back: each must place its order exactly once, so
/// that every order stored is one a client was given. Notes how many had in
/// fact been stored (the commit went through, its answer was lost).
async fn place_refused(
    outcome: &mut Outcome,
    client: &Client,
    backends: &DurableBackends,
    shoppers: &[Shopper],
    refused: &[Refused],
) -> anyhow::Result<Vec<Placed>> {
    let stored: BTreeSet<String> = backends
        .databases
        .query(
            "orders",
            "SELECT idempotency_key FROM orders WHERE idempotency_key IS NOT NULL",
        )?
        .into_iter()
        .collect();
    let mut placed = Vec::with_capacity(refused.len());
    for order in refused {
        let order_id = client
            .place_order(
                &shoppers[order.shopper],
                &demo::basket(order.index),
                &order.key,
            )
            .await?;
        placed.push(Placed {
            shopper: order.shopper,
            order_id,
        });
    }
    let committed = refused.iter().filter(|r| stored.contains(&r.key)).count();
    outcome.figure(
        "placements not answered 201, sent again after the cuts / of them already stored",
        format!("{} / {committed}", refused.len()),
    );
    Ok(placed)
}

/// The orders table must hold exactly the orders clients were given: no
/// row a refused request left behind that no retry claimed.
fn check_nothing_half_written(
    outcome: &mut Outcome,
    backends: &DurableBackends,
    placed: &[Placed],
) -> anyhow::Result<()> {
    let mut ids: Vec<&str> = placed.iter().map(|p| p.order_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    let rows = backends
        .databases
        .count("orders", "SELECT count(*) FROM orders")?;
    outcome.expect(
        "nothing half-written: the orders table holds exactly the orders clients were given \
         (placements refused during a cut and sent again placed one order each)",
        rows == ids.len() as i64 && ids.len() == placed.len(),
        || {
            format!(
                "{rows} rows, {} distinct order ids for {} placements",
                ids.len(),
                placed.len()
            )
        },
    );
    Ok(())
}

/// A 2xx, or a 503 that says what it is: what a client can act on. Every
/// request of the load is valid, so a 4xx is a wrong answer too (a 404 for
/// an order that exists, say).
fn is_clean(what: &str) -> bool {
    what.starts_with('2') || what == UNAVAILABLE
}

/// How [`send`] names a 503 with the interface's `unavailable` error body.
const UNAVAILABLE: &str = "503 `unavailable`";

/// One load client's view of the app.
#[derive(Clone)]
struct Load {
    url: String,
    http: reqwest::Client,
    shoppers: Arc<Vec<Shopper>>,
    known_order: String,
    tally: Arc<Tally>,
}

impl Load {
    /// Sends requests one after another, [`PAUSE`] apart, until `stop`: a
    /// placement, an order read and a catalogue read in turn. A request is
    /// never abandoned half-way: its effect must be counted.
    async fn run(self, client: usize, stop: Arc<AtomicBool>) {
        for round in 0.. {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match round % 3 {
                0 => self.place(client, round).await,
                1 => {
                    let path = format!("/orders/{}", self.known_order);
                    let request = self.http.get(format!("{}{path}", self.url));
                    let answer = send(request.bearer_auth(&self.shoppers[0].token)).await;
                    self.tally.record(&answer);
                }
                _ => {
                    let request = self.http.get(format!("{}/inventory", self.url));
                    self.tally.record(&send(request).await);
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }

    async fn place(&self, client: usize, round: usize) {
        let index = client * 1_000_000 + round;
        let shopper = index % self.shoppers.len();
        let key = format!("{NAME}-{client}-{round}");
        let request = self
            .http
            .post(format!("{}/orders", self.url))
            .bearer_auth(&self.shoppers[shopper].token)
            .header("idempotency-key", &key)
            .json(&json!({ "items": demo::basket(index) }));
        let answer = send(request).await;
        let order_id = answer
            .body
            .as_ref()
            .and_then(|body| body["order_id"].as_str().map(str::to_string))
            .filter(|_| answer.what.starts_with("201"));
        match order_id {
            Some(order_id) => self.tally.placed(Placed { shopper, order_id }),
            // Whatever it was (a 503, or a violation), it is sent again
            // after the cuts, so that anything it stored is accounted for.
            None => self.tally.refused(Refused {
                shopper,
                key,
                index,
            }),
        }
        self.tally.record(&answer);
    }
}

/// What one request got.
struct Answer {
    /// Its status line (a 503 named by its error code), or what went wrong.
    what: String,
    body: Option<serde_json::Value>,
    took: Duration,
}

/// Sends one request, once.
async fn send(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let (what, body) = match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.json::<serde_json::Value>().await {
                Ok(body) if status.as_u16() == 503 => {
                    let what = match body["error"].as_str() {
                        Some("unavailable") => UNAVAILABLE.to_string(),
                        Some(code) => format!("503 `{code}`"),
                        None => "503 without an error code".to_string(),
                    };
                    (what, Some(body))
                }
                Ok(body) => (status.to_string(), Some(body)),
                Err(_) => (format!("{status} without a JSON body"), None),
            }
        }
        Err(error) if error.is_timeout() => (format!("no answer within {HANG:?}"), None),
        Err(_) => ("connection dropped".to_string(), None),
    };
    Answer {
        what,
        body,
        took: started.elapsed(),
    }
}

/// What the clients saw, split by whether the database was cut.
#[derive(Default)]
struct Tally {
    cut: AtomicBool,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// (`DURING_A_CUT` | `REACHABLE`, status or failure) → count.
    statuses: BTreeMap<(&'static str, String), usize>,
    /// How long each answer given during a cut took.
    waits_during_cuts: Vec<Duration>,
    placed: Vec<Placed>,
    refused: Vec<Refused>,
}

/// A placement that did not get a 201.
struct Refused {
    shopper: usize,
    /// Its Idempotency-Key.
    key: String,
    /// Its basket's index.
    index: usize,
}

impl Tally {
    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, answer: &Answer) {
        let cut = self.cut.load(Ordering::SeqCst);
        let during = if cut { DURING_A_CUT } else { REACHABLE };
        let mut counts = self.counts();
        *counts
            .statuses
            .entry((during, answer.what.clone()))
            .or_default() += 1;
        if cut {
            counts.waits_during_cuts.push(answer.took);
        }
    }

    fn placed(&self, placed: Placed) {
        self.counts().placed.push(placed);
    }

    fn refused(&self, refused: Refused) {
        self.counts().refused.push(refused);
    }

    fn into_counts(self) -> Counts {
        self.counts.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::{UNAVAILABLE, is_clean};

    #[test]
    fn only_successes_and_named_503s_are_clean() {
        assert!(is_clean("200 OK"));
        assert!(is_clean("201 Created"));
        assert!(is_clean(UNAVAILABLE));
        assert!(!is_clean("503 without an error code"));
        assert!(!is_clean("404 Not Found"));
        assert!(!is_clean("500 Internal Server Error without a JSON body"));
        assert!(!is_clean("connection dropped"));
    }
}
