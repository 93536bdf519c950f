//! The demo app under faults: its durable backends, a client that rides out
//! host restarts, the order mix, and the ledger that must add up afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::report::Outcome;
use crate::scenarios::Context;
use crate::services::{Databases, PrivateNats, REDIS};

/// The demo's services that own a database.
pub const SERVICES: [&str; 6] = ["auth", "users", "orders", "inventory", "payments", "saga"];
/// The signing key the scenarios give the app.
pub const SECRET: &str = "a-signing-key-for-the-fault-suite-0123456789";
/// How long a request may keep failing (the host restarting) before the
/// client gives up.
const RETRY_DEADLINE: Duration = Duration::from_secs(120);
/// How long the orders may take to settle once the faults stop.
const SETTLE_DEADLINE: Duration = Duration::from_secs(300);

/// What the demo runs on in a scenario: a private NATS JetStream server,
/// fresh PostgreSQL databases and the local Redis.
pub struct DurableBackends {
    pub nats: PrivateNats,
    pub databases: Databases,
    config: PathBuf,
}

impl DurableBackends {
    /// Starts the NATS server and writes a runtime config whose databases live
    /// on `postgres` (`postgres://user@host:port`: the server, or a proxy).
    pub async fn start(context: &Context, scenario: &str, postgres: &str) -> anyhow::Result<Self> {
        let nats = PrivateNats::start().await?;
        let databases = Databases::new(scenario, &SERVICES);
        let config = context
            .work()
            .join(format!("{scenario}-runtime-config.toml"));
        let text = format!(
            "[messaging]\nurl = \"{}\"\n\n[key_value_store.default]\ntype = \"redis\"\nurl = \"{REDIS}\"\n{}",
            nats.url(),
            databases.runtime_config(postgres)
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Self {
            nats,
            databases,
            config,
        })
    }

    /// `spindle up` arguments for the demo on these backends; `replica`
    /// names the state directory.
    pub fn host_args(&self, context: &Context, replica: &str) -> Vec<String> {
        let mut args = context.demo_args(replica);
        args.push("--runtime-config-file".into());
        args.push(self.config.display().to_string());
        args
    }
}

/// An HTTP client of the demo that spreads requests over the live replicas
/// and retries while none answers (a host being restarted).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<RwLock<Vec<String>>>,
    turn: Arc<AtomicUsize>,
}

/// A signed-up, logged-in user of the demo.
#[derive(Clone)]
pub struct Shopper {
    pub email: String,
    pub token: String,
}

/// One order as placed: by which shopper, and its id.
#[derive(Clone)]
pub struct Placed {
    pub shopper: usize,
    pub order_id: String,
}

/// What one reply said.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(endpoints: Vec<String>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()?,
            endpoints: Arc::new(RwLock::new(endpoints)),
            turn: Arc::default(),
        })
    }

    /// Points the client at these replicas from now on.
    pub fn set_endpoints(&self, endpoints: Vec<String>) {
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = endpoints;
    }

    /// The next replica in turn.
    fn endpoint(&self) -> String {
        let endpoints = self.endpoints.read().unwrap_or_else(|e| e.into_inner());
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        endpoints[turn % endpoints.len()].clone()
    }

    /// Sends `method path` (with `token` and a JSON `body`) until a replica
    /// answers with something other than a 502/503, or the deadline passes.
    /// Only for requests that are safe to repeat.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let until = Instant::now() + RETRY_DEADLINE;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.endpoint()));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let last = match request.send().await {
                Ok(response) if ![502, 503].contains(&response.status().as_u16()) => {
                    let status = response.status().as_u16();
                    // A host killed while sending the body: ask again.
                    match response.text().await {
                        Ok(text) => {
                            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                            return Ok(Reply { status, body });
                        }
                        Err(error) => format!("{status}, then the body broke off: {error}"),
                    }
                }
                Ok(response) => format!("{}", response.status()),
                Err(error) => format!("{error}"),
            };
            if Instant::now() > until {
                bail!("{method} {path}: no answer within {RETRY_DEADLINE:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs up and logs in a new user; a sign-up whose answer was lost and
    /// that is repeated finds the email taken, which is fine.
    pub async fn sign_up(&self, name: &str) -> anyhow::Result<Shopper> {
        let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "a fault-suite password";
        let signup = json!({ "email": email, "password": password, "name": name });
        let reply = self
            .call(
                reqwest::Method::POST,
                "/auth/signup",
                None,
                &[],
                Some(&signup),
            )
            .await?;
        if ![201, 409].contains(&reply.status) {
            bail!("sign-up of {email}: {} {}", reply.status, reply.body);
        }
        let login = json!({ "email": email, "password": password });
        let reply = self
            .call(
                reqwest::Method::POST,
                "/auth/login",
                None,
                &[],
                Some(&login),
            )
            .await?;
        let token = reply.body["token"]
            .as_str()
            .with_context(|| format!("login of {email}: {} {}", reply.status, reply.body))?;
        Ok(Shopper {
            email,
            token: token.to_string(),
        })
    }

    /// The shopper's payment account, once `user.created` has opened it.
    pub async fn account(&self, shopper: &Shopper) -> anyhow::Result<Value> {
        let until = Instant::now() + SETTLE_DEADLINE;
        loop {
            let reply = self
                .call(
                    reqwest::Method::GET,
                    "/payments/account",
                    Some(&shopper.token),
                    &[],
                    None,
                )
                .await?;
            if reply.status == 200 {
                return Ok(reply.body);
            }
            if Instant::now() > until {
                bail!(
                    "no account for {}: {} {}",
                    shopper.email,
                    reply.status,
                    reply.body
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stock and price per SKU.
    pub async fn catalogue(&self) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
        let reply = self
            .call(reqwest::Method::GET, "/inventory", None, &[], None)
            .await?;
        let items = reply.body["items"]
            .as_array()
            .with_context(|| format!("GET /inventory: {} {}", reply.status, reply.body))?;
        items
            .iter()
            .map(|item| {
                let sku = item["sku"].as_str().context("sku")?.to_string();
                let price = item["price_cents"].as_i64().context("price_cents")?;
                let available = item["available"].as_i64().context("available")?;
                Ok((sku, (price, available)))
            })
            .collect()
    }

    /// Places one order under `key` (an Idempotency-Key: repeating it after
    /// a lost answer places nothing new) and returns its id.
    pub async fn place_order(
        &self,
        shopper: &Shopper,
        items: &Value,
        key: &str,
    ) -> anyhow::Result<String> {
        let body = json!({ "items": items });
        let reply = self
            .call(
                reqwest::Method::POST,
                "/orders",
                Some(&shopper.token),
                &[("idempotency-key", key)],
                Some(&body),
            )
            .await?;
        if ![200, 201].contains(&reply.status) {
            bail!("POST /orders ({key}): {} {}", reply.status, reply.body);
        }
        reply.body["order_id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no order_id in {}", reply.body))
    }

    /// The order, once it is no longer pending.
    pub async fn settled_order(
        &self,
        shopper: &Shopper,
        order_id: &str,
        until: Instant,
    ) -> anyhow::Result<Value> {
        loop {
            let reply = self
                .call(
                    reqwest::Method::GET,
                    &format!("/orders/{order_id}"),
                    Some(&shopper.token),
                    &[],
                    None,
                )
                .await?;
            if reply.status == 200 && reply.body["status"] != "pending" {
                return Ok(reply.body);
            }
            if Instant::now() > until {
                bail!(
                    "order {order_id} not settled: {} {}",
                    reply.status,
                    reply.body
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The baskets orders cycle through: cheap lines that confirm, a monitor that
/// confirms until the credit runs out, a laptop over every credit limit, and
/// a lamp with 3 in stock that runs out.
pub fn basket(index: usize) -> Value {
    let baskets = [
        json!([{ "sku": "KEYB-001", "quantity": 1 }]),
        json!([{ "sku": "MOUS-002", "quantity": 2 }, { "sku": "CABL-003", "quantity": 1 }]),
        json!([{ "sku": "CABL-003", "quantity": 1 }]),
        json!([{ "sku": "MONI-004", "quantity": 1 }]),
        json!([{ "sku": "LAPT-005", "quantity": 1 }]),
        json!([{ "sku": "LAMP-006", "quantity": 1 }]),
        json!([{ "sku": "CABL-003", "quantity": 2 }]),
    ];
    baskets[index % baskets.len()].clone()
}

/// A scenario's shoppers and the stock before their orders: what the
/// ledger must add up to once every order has settled.
pub struct Ledger {
    pub shoppers: Arc<Vec<Shopper>>,
    stock_before: BTreeMap<String, (i64, i64)>,
}

impl Ledger {
    /// Signs up `users` shoppers, waits for their accounts and notes the
    /// stock.
    pub async fn open(client: &Client, users: usize) -> anyhow::Result<Self> {
        let mut shoppers = Vec::with_capacity(users);
        for index in 0..users {
            shoppers.push(client.sign_up(&format!("shopper{index}")).await?);
        }
        for shopper in &shoppers {
            client.account(shopper).await?;
        }
        Ok(Self {
            shoppers: Arc::new(shoppers),
            stock_before: client.catalogue().await?,
        })
    }

    /// Checks, into `outcome`, what the saga promises once `placed` have
    /// settled (see [`check_ledger`]).
    pub async fn check(
        &self,
        outcome: &mut Outcome,
        client: &Client,
        databases: &Databases,
        placed: &[Placed],
    ) -> anyhow::Result<()> {
        check_ledger(
            outcome,
            client,
            databases,
            &self.shoppers,
            placed,
            &self.stock_before,
        )
        .await
    }
}

/// Places `count` orders, `concurrency` at a time, spread over `shoppers`,
/// each under the Idempotency-Key `<tag>-<index>`; at most `per_second`
/// start each second, so that the load spans the faults a scenario injects.
pub async fn place_orders(
    client: &Client,
    shoppers: &[Shopper],
    count: usize,
    concurrency: usize,
    tag: &str,
    per_second: f64,
) -> anyhow::Result<Vec<Placed>> {
    let started = tokio::time::Instant::now();
    let placed = futures::stream::iter(0..count)
        .then(|index| async move {
            let due = started + Duration::from_secs_f64(index as f64 / per_second);
            tokio::time::sleep_until(due).await;
            index
        })
        .map(|index| {
            let shopper = index % shoppers.len();
            let key = format!("{tag}-{index}");
            async move {
                let order_id = client
                    .place_order(&shoppers[shopper], &basket(index), &key)
                    .await?;
                anyhow::Ok(Placed { shopper, order_id })
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    placed.into_iter().collect()
}

/// Checks what the saga promises once every order has settled: each ended
/// confirmed or cancelled, stock and charges add up to exactly the confirmed
/// orders (no effect lost or applied twice), every saga finished and every
/// outbox drained.
async fn check_ledger(
    outcome: &mut Outcome,
    client: &Client,
    databases: &Databases,
    shoppers: &[Shopper],
    placed: &[Placed],
    stock_before: &BTreeMap<String, (i64, i64)>,
) -> anyhow::Result<()> {
    let until = Instant::now() + SETTLE_DEADLINE;
    let mut unsettled = Vec::new();
    let (mut confirmed, mut cancelled) = (0usize, 0usize);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut sold: BTreeMap<String, i64> = BTreeMap::new();
    let mut charged = vec![0i64; shoppers.len()];
    for order in placed {
        let shopper = &shoppers[order.shopper];
        let body = match client.settled_order(shopper, &order.order_id, until).await {
            Ok(body) => body,
            Err(error) => {
                unsettled.push(format!("{error:#}"));
                continue;
            }
        };
        match body["status"].as_str() {
            Some("confirmed") => {
                confirmed += 1;
                for item in body["items"].as_array().into_iter().flatten() {
                    let sku = item["sku"].as_str().unwrap_or_default().to_string();
                    let quantity = item["quantity"].as_i64().unwrap_or_default();
                    let price = stock_before.get(&sku).map_or(0, |(price, _)| *price);
                    *sold.entry(sku).or_default() += quantity;
                    charged[order.shopper] += price * quantity;
                }
            }
            Some("cancelled") => {
                cancelled += 1;
                let reason = body["reason"].as_str().unwrap_or("(none)");
                *reasons.entry(reason_kind(reason)).or_default() += 1;
            }
            _ => unsettled.push(format!("order {} ended {}", order.order_id, body["status"])),
        }
    }
    outcome.figure("orders placed", placed.len());
    outcome.figure("confirmed", confirmed);
    outcome.figure("cancelled", cancelled);
    for (reason, count) in &reasons {
        outcome.figure(format!("cancelled: {reason}"), count);
    }
    outcome.expect(
        "every order ended confirmed or cancelled",
        unsettled.is_empty(),
        || {
            format!(
                "{} did not: {}",
                unsettled.len(),
                unsettled
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    outcome.expect(
        "the load both confirms and cancels orders",
        confirmed > 0 && cancelled > 0,
        || format!("{confirmed} confirmed, {cancelled} cancelled"),
    );

    let stock_after = client.catalogue().await?;
    let wrong_stock: Vec<String> = stock_before
        .iter()
        .filter_map(|(sku, (_, before))| {
            let expected = before - sold.get(sku).copied().unwrap_or(0);
            let after = stock_after.get(sku).map_or(-1, |(_, available)| *available);
            (after != expected).then(|| format!("{sku}: {after}, expected {expected}"))
        })
        .collect();
    outcome.expect(
        "stock of every SKU = start − confirmed quantities",
        wrong_stock.is_empty(),
        || wrong_stock.join(", "),
    );

    let mut wrong_charges = Vec::new();
    for (shopper, expected) in shoppers.iter().zip(&charged) {
        let account = client.account(shopper).await?;
        if account["charged_cents"].as_i64() != Some(*expected) {
            wrong_charges.push(format!(
                "{}: {}, expected {expected}",
                shopper.email, account["charged_cents"]
            ));
        }
    }
    outcome.expect(
        "each account's charges = its confirmed amounts",
        wrong_charges.is_empty(),
        || wrong_charges.join(", "),
    );

    let confirmed = confirmed as i64;
    let reserved = databases.count(
        "inventory",
        "SELECT count(*) FROM reservations WHERE status = 'reserved'",
    )?;
    let charges = databases.count(
        "payments",
        "SELECT count(*) FROM charges WHERE status = 'charged'",
    )?;
    let drifting = databases.count(
        "payments",
        "SELECT count(*) FROM accounts a WHERE a.charged_cents <> (SELECT coalesce(sum(c.amount_cents), 0) \
         FROM charges c WHERE c.user_id = a.user_id AND c.status = 'charged')",
    )?;
    outcome.expect(
        "no event applied twice: one standing reservation and one charge per confirmed order, \
         and each account's total is the sum of its charge rows",
        reserved == confirmed && charges == confirmed && drifting == 0,
        || format!("{reserved} reservations, {charges} charges for {confirmed} confirmed orders; {drifting} accounts off their charge rows"),
    );
    let open_sagas = databases.count(
        "saga",
        "SELECT count(*) FROM sagas WHERE state NOT IN ('confirmed', 'cancelled')",
    )?;
    outcome.expect("every saga finished", open_sagas == 0, || {
        format!("{open_sagas} still running")
    });

    let backlog = drained_outboxes(databases).await?;
    outcome.expect("nothing left in any outbox", backlog.is_empty(), || {
        backlog.join(", ")
    });
    let mut dead = 0;
    for service in SERVICES {
        dead += databases.count(
            service,
            "SELECT count(*) FROM spindle.spindle_outbox_dead_letters",
        )?;
    }
    outcome.expect("no message dead-lettered", dead == 0, || {
        format!("{dead} dead letters")
    });
    Ok(())
}

/// Waits (up to a minute) for every service's outbox to empty; returns the
/// services whose outbox still holds messages.
async fn drained_outboxes(databases: &Databases) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut backlog = Vec::new();
        for service in SERVICES {
            let rows = databases.count(service, "SELECT count(*) FROM spindle.spindle_outbox")?;
            if rows > 0 {
                backlog.push(format!("{service}: {rows} messages"));
            }
        }
        if backlog.is_empty() || Instant::now() > until {
            return Ok(backlog);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The kind of a cancellation reason, without its order-specific figures.
fn reason_kind(reason: &str) -> String {
    let kind = reason.split([':', '(']).next().unwrap_or(reason).trim();
    if kind.is_empty() {
        "(none)".into()
    } else {
        kind.to_string()
    }
}
