//! PostgreSQL unreachable: every database of the app goes through a TCP
//! proxy that is cut and restored while clients use the app. While it is
//! cut, requests must fail cleanly (503, never a 500, a hang or a dropped
//! connection); afterwards nothing may be half-written, and `/ready` must
//! recover without a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::Context;
use super::crash::median;
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

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let cuts = context.scale(3).max(2);
    let users = 10;
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{CLIENTS} clients, each sending one request after another ({} ms apart) without \
         retrying: order \
         placements (each under its own Idempotency-Key), order reads and catalogue reads",
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

    let (mut noticed, mut recovered) = (Vec::new(), Vec::new());
    for _ in 0..cuts {
        tokio::time::sleep(BETWEEN).await;
        tally.set_cut(true);
        proxy.cut();
        let cut_at = Instant::now();
        let database_down = |status: u16, down: &[String]| {
            status == 503 && down.iter().any(|d| d.starts_with("database"))
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
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await?;
    }
    drop(load);

    let tally = Arc::into_inner(tally)
        .context("the load clients still hold the tally")?
        .into_counts();
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
        "every answer, during the cuts too, is a success, a client error or a 503: no 500, \
         no hang, no dropped connection",
        unclean.is_empty(),
        || unclean.join(", "),
    );
    let refused_during_cuts: usize = tally
        .statuses
        .iter()
        .filter(|((during, what), _)| *during == "during a cut" && what.starts_with("503"))
        .map(|(_, count)| count)
        .sum();
    outcome.expect(
        "requests were refused with 503 while the database was cut",
        refused_during_cuts > 0,
        || "no 503 during any cut: the cuts did not reach the app".to_string(),
    );
    outcome.expect(
        "`/ready` answered 503 naming a database during every cut",
        noticed.iter().all(Option::is_some),
        || {
            format!(
                "{} of {cuts} cuts went unreported",
                noticed.iter().filter(|n| n.is_none()).count()
            )
        },
    );
    outcome.expect(
        format!("`/ready` back to 200 within {RECOVERY:?} of every restore, without a restart"),
        recovered
            .iter()
            .all(|r| r.is_some_and(|took| took <= RECOVERY)),
        || format!("recovery times: {recovered:?}"),
    );
    let back: Vec<Duration> = recovered.iter().flatten().copied().collect();
    outcome.figure(
        "database restored to `/ready` 200, median / max",
        format!(
            "{:.0} ms / {:.0} ms",
            median(&back).as_secs_f64() * 1000.0,
            back.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0
        ),
    );

    // Placements that were refused are sent again under the same key: a
    // refusal must have written nothing, so each now places its order once.
    let mut placed = vec![Placed {
        shopper: 0,
        order_id: first,
    }];
    placed.extend(tally.placed);
    for (shopper, key, index) in &tally.refused {
        let order_id = client
            .place_order(&shoppers[*shopper], &demo::basket(*index), key)
            .await?;
        placed.push(Placed {
            shopper: *shopper,
            order_id,
        });
    }
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
    outcome.figure(
        "orders placed (refused ones sent again after the cuts)",
        format!("{} ({})", placed.len(), tally.refused.len()),
    );
    ledger
        .check(&mut outcome, &client, &backends.databases, &placed)
        .await?;
    let panics = host.host_panics();
    outcome.expect("no panic in the host's log", panics.is_empty(), || {
        panics.join(" | ")
    });
    Ok(outcome)
}

/// A 2xx, a 4xx, or a 503: what a client can act on.
fn is_clean(what: &str) -> bool {
    what.starts_with('2') || what.starts_with('4') || what.starts_with("503")
}

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
                    self.tally
                        .record(send(request.bearer_auth(&self.shoppers[0].token)).await);
                }
                _ => {
                    let request = self.http.get(format!("{}/inventory", self.url));
                    self.tally.record(send(request).await);
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
        let (what, body) = send(request).await;
        if what.starts_with("201") {
            if let Some(order_id) = body.and_then(|b| b["order_id"].as_str().map(str::to_string)) {
                self.tally.placed(Placed { shopper, order_id });
            }
        } else if what.starts_with("503") {
            self.tally.refused(shopper, key, index);
        }
        self.tally.record((what, None));
    }
}

/// Sends one request: its status line (or what went wrong) and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (String, Option<serde_json::Value>) {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.json::<serde_json::Value>().await {
                Ok(body) => (status.to_string(), Some(body)),
                Err(_) if status.is_success() => (format!("{status} with a broken body"), None),
                Err(_) => (status.to_string(), None),
            }
        }
        Err(error) if error.is_timeout() => (format!("no answer within {HANG:?}"), None),
        Err(_) => ("connection dropped".to_string(), None),
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
    /// ("during a cut" | "database reachable", status or failure) → count.
    statuses: BTreeMap<(&'static str, String), usize>,
    placed: Vec<Placed>,
    /// (shopper, Idempotency-Key, basket index) of each refused placement.
    refused: Vec<(usize, String, usize)>,
}

impl Tally {
    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, (what, _): (String, Option<serde_json::Value>)) {
        let during = if self.cut.load(Ordering::SeqCst) {
            "during a cut"
        } else {
            "database reachable"
        };
        *self.counts().statuses.entry((during, what)).or_default() += 1;
    }

    fn placed(&self, placed: Placed) {
        self.counts().placed.push(placed);
    }

    fn refused(&self, shopper: usize, key: String, index: usize) {
        self.counts().refused.push((shopper, key, index));
    }

    fn into_counts(self) -> Counts {
        self.counts.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
