//! The managed database (`spindle:platform/sql`) end to end: every scenario
//! runs on the embedded SQLite default and on the local PostgreSQL, through a
//! guest that runs the SQL steps each test describes.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value as Json, json};
use sqlx::migrate::MigrateDatabase;
use support::services::{nats_url, postgres_url};
use support::{App, Spindle, guest_wasm};

/// Where a test's databases live.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// alpha's timeout, for each call and each statement.
const ALPHA_TIMEOUT_SECS: u64 = 4;

/// An app of two components, `alpha` and `beta`, each owning a database of
/// the same name, with the migrations the test writes.
struct SqlApp {
    app: App,
    postgres_urls: Vec<String>,
}

const ITEMS_MIGRATION: &str = "CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    price REAL,
    data BYTEA,
    created TIMESTAMP,
    active BOOLEAN
);";

impl SqlApp {
    fn new(backend: Backend, messaging_url: Option<&str>) -> Self {
        let wasm = guest_wasm("sql-runner");
        let manifest = format!(
            r#"spin_manifest_version = 2
[application]
name = "sql"

[[trigger.http]]
route = "/alpha"
component = "alpha"

[[trigger.http]]
route = "/beta"
component = "beta"

[component.alpha]
source = "{wasm}"
[component.alpha.tool.spindle]
database = "alpha"
allowed_publish = ["test.outbox.*"]
timeout = "{ALPHA_TIMEOUT_SECS}s"

[component.beta]
source = "{wasm}"
[component.beta.tool.spindle]
database = "beta"
"#,
            wasm = wasm.display()
        );
        let app = App::new(&manifest);
        let dir = app.manifest_path().parent().expect("app dir").to_path_buf();
        write_migration(&dir, "alpha", "20250101000000_items.sql", ITEMS_MIGRATION);
        write_migration(
            &dir,
            "beta",
            "20250101000000_notes.sql",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
        );

        let mut config = String::new();
        let mut postgres_urls = Vec::new();
        if let Backend::Postgres = backend {
            let server = postgres_url();
            let base = server
                .rsplit_once('/')
                .map_or(server.as_str(), |(base, _)| base);
            let run = uuid::Uuid::new_v4().simple().to_string();
            for label in ["alpha", "beta"] {
                let url = format!("{base}/spindle_test_{}_{label}", &run[..12]);
                config.push_str(&format!("[database.{label}]\nurl = \"{url}\"\n"));
                postgres_urls.push(url);
            }
        }
        if let Some(url) = messaging_url {
            config.push_str(&format!("[messaging]\nurl = \"{url}\"\n"));
        }
        std::fs::write(dir.join("runtime-config.toml"), config).expect("write runtime config");
        Self { app, postgres_urls }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.app
            .manifest_path()
            .parent()
            .expect("app dir")
            .to_path_buf()
    }

    fn start(&self) -> Spindle {
        let config = self.dir().join("runtime-config.toml");
        self.app.start_with(&[
            "--runtime-config-file",
            config.to_str().expect("utf-8 path"),
        ])
    }

    fn start_expecting_failure(&self) -> String {
        let config = self.dir().join("runtime-config.toml");
        let (code, stderr) = self.app.run_up_expecting_failure_with(&[
            "--runtime-config-file",
            config.to_str().expect("utf-8 path"),
        ]);
        assert_ne!(code, 0, "spindle up should have failed:\n{stderr}");
        stderr
    }

    /// Drops the PostgreSQL databases the test created, and their roles.
    async fn cleanup(self) {
        for url in &self.postgres_urls {
            let _ = sqlx::Postgres::force_drop_database(url).await;
        }
        let Ok(server) = sqlx::PgPool::connect(&postgres_url()).await else {
            return;
        };
        for url in &self.postgres_urls {
            for role in database_roles(url) {
                let drop = format!("DROP ROLE IF EXISTS \"{role}\"");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&server)
                    .await;
            }
        }
    }
}

/// The database a `postgres://…/name` URL names.
fn database_of(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

/// The component's and the host's role of a managed PostgreSQL database.
fn database_roles(url: &str) -> [String; 2] {
    let database = database_of(url);
    [format!("{database}_app"), format!("{database}_host")]
}

fn write_migration(dir: &std::path::Path, component: &str, file: &str, sql: &str) {
    let folder = dir.join("migrations").join(component);
    std::fs::create_dir_all(&folder).expect("create migrations folder");
    std::fs::write(folder.join(file), sql).expect("write migration");
}

/// Runs `plan` on `component` and returns (status, parsed body).
async fn run(spindle: &Spindle, component: &str, plan: Json) -> (u16, Json) {
    let reply = spindle
        .post(&format!("/{component}"), &plan.to_string())
        .await;
    let body = serde_json::from_str(&reply.body)
        .unwrap_or_else(|_| panic!("not JSON: {} {}", reply.status, reply.body));
    (reply.status, body)
}

async fn crud(backend: Backend) {
    let app = SqlApp::new(backend, None);
    let spindle = app.start();
    let created = 1_732_000_000_123_456_i64;
    let (status, body) = run(&spindle, "alpha", json!({"steps": [
        {"execute": "INSERT INTO items (id, name, price, data, created, active) VALUES ($1, $2, $3, $4, $5, $6)",
         "params": [1, "widget", 2.5, {"bytes": [0, 1, 255]}, {"timestamp": created}, true]},
        {"execute": "INSERT INTO items (id, name, price, data, created, active) VALUES ($1, $2, $3, $4, $5, $6)",
         "params": [2, "gadget", null, null, null, false]},
        {"execute": "UPDATE items SET name = $2 WHERE id = $1", "params": [2, "gizmo"]},
        {"query": "SELECT id, name, price, data, created, active FROM items ORDER BY id"},
        {"execute": "DELETE FROM items WHERE id = $1", "params": [1]},
        {"query": "SELECT name FROM items"}
    ]})).await;
    assert_eq!(status, 200, "{body}");
    let results = &body["results"];
    assert_eq!(results[2], json!(1), "the update touched one row");
    assert_eq!(
        results[3],
        json!({
            "columns": ["id", "name", "price", "data", "created", "active"],
            "rows": [
                [1, "widget", 2.5, {"bytes": [0, 1, 255]}, {"timestamp": created}, true],
                [2, "gizmo", null, null, null, false]
            ]
        }),
        "{backend:?}"
    );
    assert_eq!(results[4], json!(1));
    assert_eq!(results[5]["rows"], json!([["gizmo"]]));
    drop(spindle);
    app.cleanup().await;
}

async fn failed_transaction_leaves_nothing(backend: Backend) {
    let app = SqlApp::new(backend, None);
    let spindle = app.start();
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"transaction": true, "steps": [
            {"execute": "INSERT INTO items (id, name) VALUES ($1, $2)", "params": [1, "first"]},
            {"execute": "INSERT INTO items (id, name) VALUES ($1, $2)", "params": [2, "first"]}
        ]}),
    )
    .await;
    assert_eq!(status, 500, "the duplicate name must fail: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("ConstraintViolation"),
        "{body}"
    );
    let (_, body) = run(
        &spindle,
        "alpha",
        json!({"steps": [{"query": "SELECT count(*) AS n FROM items"}]}),
    )
    .await;
    assert_eq!(
        body["results"][0]["rows"],
        json!([[0]]),
        "{backend:?}: the first insert was kept"
    );
    drop(spindle);
    app.cleanup().await;
}

async fn components_cannot_see_each_others_tables(backend: Backend) {
    let app = SqlApp::new(backend, None);
    let spindle = app.start();
    let (status, body) = run(
        &spindle,
        "beta",
        json!({"steps": [{"query": "SELECT * FROM items"}]}),
    )
    .await;
    assert_eq!(status, 500, "beta read alpha's table: {body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("BadQuery"),
        "{body}"
    );
    let (status, _) = run(
        &spindle,
        "beta",
        json!({"steps": [{"query": "SELECT * FROM notes"}]}),
    )
    .await;
    assert_eq!(status, 200, "beta's own table");
    drop(spindle);
    app.cleanup().await;
}

async fn migrations_apply_once_and_data_survives_a_restart(backend: Backend) {
    let app = SqlApp::new(backend, None);
    let first = app.start();
    let (status, _) = run(
        &first,
        "alpha",
        json!({"steps": [
            {"execute": "INSERT INTO items (id, name) VALUES (1, 'kept')"}
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    drop(first);

    let second = app.start();
    let (_, body) = run(
        &second,
        "alpha",
        json!({"steps": [{"query": "SELECT name FROM items"}]}),
    )
    .await;
    assert_eq!(body["results"][0]["rows"], json!([["kept"]]), "{backend:?}");
    drop(second);
    app.cleanup().await;
}

async fn broken_migration_stops_start_up_naming_the_file(backend: Backend) {
    let app = SqlApp::new(backend, None);
    write_migration(
        &app.dir(),
        "beta",
        "20250102000000_broken.sql",
        "CREATE TABLE oops (;",
    );
    let stderr = app.start_expecting_failure();
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(last.starts_with("Error: "), "{stderr}");
    assert!(last.contains("20250102000000_broken.sql"), "{stderr}");
    assert!(last.contains("component `beta`"), "{stderr}");
    app.cleanup().await;
}

async fn changed_migration_is_refused(backend: Backend) {
    let app = SqlApp::new(backend, None);
    drop(app.start());
    write_migration(
        &app.dir(),
        "beta",
        "20250101000000_notes.sql",
        "CREATE TABLE notes (id INTEGER);",
    );
    let stderr = app.start_expecting_failure();
    assert!(stderr.contains("must not change once applied"), "{stderr}");
    app.cleanup().await;
}

/// Subscribes to a fresh subject on the local NATS server.
async fn subscribe() -> (String, async_nats::Subscriber) {
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to NATS");
    let subject = format!("test.outbox.{}", uuid::Uuid::new_v4().simple());
    let subscriber = client.subscribe(subject.clone()).await.expect("subscribe");
    client.flush().await.expect("flush the subscription");
    (subject, subscriber)
}

async fn next_body(subscriber: &mut async_nats::Subscriber) -> String {
    let message = tokio::time::timeout(Duration::from_secs(20), subscriber.next())
        .await
        .expect("a message within 20s")
        .expect("the subscription is open");
    String::from_utf8_lossy(&message.payload).into_owned()
}

async fn outbox_delivers_committed_messages_and_not_rolled_back_ones(backend: Backend) {
    let (subject, mut subscriber) = subscribe().await;
    let app = SqlApp::new(backend, Some(&nats_url()));
    let spindle = app.start();
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"transaction": true, "commit": false, "steps": [
            {"execute": "INSERT INTO items (id, name) VALUES (1, 'rolled back')"},
            {"publish": subject, "body": "rolled back"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"transaction": true, "steps": [
            {"execute": "INSERT INTO items (id, name) VALUES (2, 'committed')"},
            {"publish": subject, "body": "first"},
            {"publish": subject, "body": "second"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The relay sends in commit order, so had the rolled-back message been
    // stored it would arrive before these.
    assert_eq!(next_body(&mut subscriber).await, "first", "{backend:?}");
    assert_eq!(next_body(&mut subscriber).await, "second");
    drop(spindle);
    app.cleanup().await;
}

async fn outbox_refuses_subjects_the_manifest_does_not_allow(backend: Backend) {
    let (subject, _subscriber) = subscribe().await;
    let app = SqlApp::new(backend, Some(&nats_url()));
    let spindle = app.start();
    // `beta` has no `allowed_publish`: its outbox may not publish at all.
    let (status, body) = run(
        &spindle,
        "beta",
        json!({"transaction": true, "steps": [{"publish": subject, "body": "sneaky"}]}),
    )
    .await;
    assert_ne!(status, 200, "{body}");
    assert!(body.to_string().contains("allowed_publish"), "{body}");
    drop(spindle);
    app.cleanup().await;
}

async fn outbox_messages_survive_a_kill_before_relay(backend: Backend) {
    // Nothing listens on this port: commits succeed, relays fail and retry.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("nats://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let (subject, mut subscriber) = subscribe().await;
    let app = SqlApp::new(backend, Some(&dead_url));
    let spindle = app.start();
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"transaction": true, "steps": [
            {"publish": subject, "body": "survivor"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(spindle); // SIGKILL

    let config = app.dir().join("runtime-config.toml");
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, text.replace(&dead_url, &nats_url())).expect("write config");
    let restarted = app.start();
    assert_eq!(next_body(&mut subscriber).await, "survivor", "{backend:?}");
    drop(restarted);
    app.cleanup().await;
}

/// The SQL that reaches another file or the host's tables, each refused to
/// `alpha` with the interface's error; beta's rows never show.
async fn a_component_reaches_only_its_own_tables() {
    let app = SqlApp::new(Backend::Sqlite, None);
    let spindle = app.start();
    let (status, body) = run(
        &spindle,
        "beta",
        json!({"steps": [
            {"execute": "INSERT INTO notes (id, body) VALUES (1, 'beta secret')"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let beta_file = app.dir().join(".spin/databases/beta.db");
    assert!(
        beta_file.is_file(),
        "beta's database is where the test expects"
    );
    let copy = app.dir().join("stolen-copy.db");
    let hostile = [
        format!("ATTACH DATABASE '{}' AS o", beta_file.display()),
        "ATTACH DATABASE '/etc/hostname' AS o".to_string(),
        format!("VACUUM INTO '{}'", copy.display()),
        "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libc.so.6')".to_string(),
        "PRAGMA database_list".to_string(),
        "SELECT * FROM spindle_outbox".to_string(),
        "INSERT INTO spindle_outbox (subject, body, headers) VALUES ('x.stolen', x'6869', '[]')"
            .to_string(),
    ];
    for statement in hostile {
        for transaction in [false, true] {
            let step = if statement.starts_with("SELECT") || statement.starts_with("PRAGMA") {
                json!({"query": statement})
            } else {
                json!({"execute": statement})
            };
            let (status, body) = run(
                &spindle,
                "alpha",
                json!({"transaction": transaction, "steps": [step]}),
            )
            .await;
            let error = body["error"].as_str().unwrap_or_default();
            assert_eq!(status, 500, "`{statement}` was not refused: {body}");
            // Inside a transaction SQLite may refuse some (VACUUM) sooner,
            // with its own reason; outside one the sandbox says why.
            assert!(
                error.contains("BadQuery")
                    && (transaction || error.contains("only its own tables")),
                "`{statement}`: {error}"
            );
            assert!(!body.to_string().contains("beta secret"), "{body}");
        }
    }
    assert!(!copy.exists(), "VACUUM INTO wrote a file");
    // The sandbox leaves the component's own work alone.
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"steps": [
            {"execute": "INSERT INTO items (id, name) VALUES (1, 'mine')"},
            {"query": "PRAGMA table_info(items)"},
            {"query": "SELECT name FROM items"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][2]["rows"], json!([["mine"]]));
}

/// alpha's database, opened by the test itself behind the host's back.
enum AlphaDatabase {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl AlphaDatabase {
    async fn open(app: &SqlApp, backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let file = app.dir().join(".spin/databases/alpha.db");
                let url = format!("sqlite://{}", file.display());
                Self::Sqlite(
                    sqlx::SqlitePool::connect(&url)
                        .await
                        .expect("open alpha's file"),
                )
            }
            Backend::Postgres => Self::Postgres(
                sqlx::PgPool::connect(&app.postgres_urls[0])
                    .await
                    .expect("connect to alpha's database"),
            ),
        }
    }

    /// Writes an outbox row as a guest with direct access (or a broken
    /// migration) could.
    /// The host's tables: in their own schema on PostgreSQL.
    fn host_table(&self, name: &str) -> String {
        match self {
            Self::Sqlite(_) => name.to_string(),
            Self::Postgres(_) => format!("spindle.{name}"),
        }
    }

    async fn write_outbox_row(&self, subject: &str, headers: &str, body: Vec<u8>) {
        let insert = format!(
            "INSERT INTO {} (subject, body, headers) VALUES ($1, $2, $3)",
            self.host_table("spindle_outbox")
        );
        let insert = sqlx::AssertSqlSafe(insert);
        let written = match self {
            Self::Sqlite(pool) => sqlx::query(insert)
                .bind(subject)
                .bind(body)
                .bind(headers)
                .execute(pool)
                .await
                .map(drop),
            Self::Postgres(pool) => sqlx::query(insert)
                .bind(subject)
                .bind(body)
                .bind(headers)
                .execute(pool)
                .await
                .map(drop),
        };
        written.expect("write the outbox row");
    }

    /// The rows the relay set aside, as (subject, reason).
    async fn dead_letters(&self) -> Vec<(String, String)> {
        let select = format!(
            "SELECT subject, reason FROM {} ORDER BY id",
            self.host_table("spindle_outbox_dead_letters")
        );
        let select = sqlx::AssertSqlSafe(select);
        match self {
            Self::Sqlite(pool) => sqlx::query_as(select).fetch_all(pool).await,
            Self::Postgres(pool) => sqlx::query_as(select).fetch_all(pool).await,
        }
        .expect("read the dead letters")
    }

    /// Lets go of the connections, so the database can be dropped.
    async fn close(self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// A row on a subject alpha may not publish to, and a row whose headers
/// are not JSON: neither is sent, both are set aside with the reason, and
/// alpha's next committed event still arrives.
async fn undeliverable_outbox_rows_are_set_aside_and_later_events_arrive(backend: Backend) {
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to NATS");
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let stolen_subject = format!("x.stolen.{run_id}");
    let good_subject = format!("test.outbox.{run_id}");
    let mut stolen = client
        .subscribe(stolen_subject.clone())
        .await
        .expect("subscribe");
    let mut good = client
        .subscribe(good_subject.clone())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush the subscriptions");

    let app = SqlApp::new(backend, Some(&nats_url()));
    let spindle = app.start();
    let alpha = AlphaDatabase::open(&app, backend).await;
    alpha
        .write_outbox_row(&stolen_subject, "[]", b"poison".to_vec())
        .await;
    alpha
        .write_outbox_row(&good_subject, "not json", b"poison".to_vec())
        .await;
    // Over the server's max_payload (1 MiB by default): never sendable.
    alpha
        .write_outbox_row(&good_subject, "[]", vec![b'x'; 2 << 20])
        .await;
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"transaction": true, "steps": [{"publish": good_subject, "body": "after the poison"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        next_body(&mut good).await,
        "after the poison",
        "{backend:?}"
    );
    // The relay works in id order over one connection, so anything it sent
    // for the earlier rows would already be here.
    client.flush().await.expect("flush");
    let leaked = tokio::time::timeout(Duration::from_millis(300), stolen.next()).await;
    assert!(leaked.is_err(), "a forged row reached the bus: {leaked:?}");

    let set_aside = alpha.dead_letters().await;
    assert_eq!(set_aside.len(), 3, "{set_aside:?}");
    assert_eq!(set_aside[0].0, stolen_subject);
    assert!(set_aside[0].1.contains("allowed_publish"), "{set_aside:?}");
    assert!(set_aside[1].1.contains("JSON"), "{set_aside:?}");
    assert!(
        set_aside[2].1.contains("the server takes at most"),
        "{set_aside:?}"
    );
    let metrics = reqwest::get(format!("{}/metrics", spindle.ops_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.lines().any(
            |line| line.starts_with("spindle_outbox_dead_letters_total{component=\"alpha\"} 3")
        ),
        "{metrics}"
    );
    drop(spindle);
    alpha.close().await;
    app.cleanup().await;
}

/// A query whose rows come to about 1 GiB fails with the cap's error, the
/// host never holds much of it, and the component goes on serving.
async fn a_query_returning_a_gigabyte_is_refused_at_the_cap(backend: Backend) {
    let app = SqlApp::new(backend, None);
    let spindle = app.start();
    let gigabyte = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1024) \
             SELECT zeroblob(1048576) FROM n"
        }
        Backend::Postgres => "SELECT repeat('x', 1048576) FROM generate_series(1, 1024)",
    };
    let (status, body) = run(&spindle, "alpha", json!({"steps": [{"query": gigabyte}]})).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("64 MiB"),
        "{body}"
    );
    let peak = spindle.peak_resident_memory_bytes();
    assert!(
        peak < 300 << 20,
        "the host's peak RSS was {} MiB",
        peak >> 20
    );
    let (status, body) = run(
        &spindle,
        "alpha",
        json!({"steps": [{"query": "SELECT 1 AS one"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(spindle);
    app.cleanup().await;
}

/// A statement that never ends, inside a transaction (on SQLite it holds
/// the write lock): cut off at alpha's timeout, after which a write goes
/// through and nothing of it keeps running on the server.
async fn a_statement_that_never_ends_is_cancelled_at_the_timeout(backend: Backend) {
    let app = SqlApp::new(backend, None);
    let spindle = app.start();
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT count(*) FROM n";
    // On PostgreSQL a component may turn its own statement timeout off;
    // the host still cancels the statement.
    let attempts = match backend {
        Backend::Sqlite => vec![json!([{"query": endless}])],
        Backend::Postgres => vec![
            json!([{"query": endless}]),
            json!([{"execute": "SET statement_timeout = 0"}, {"query": endless}]),
        ],
    };
    for steps in attempts {
        let started = std::time::Instant::now();
        let plan = json!({"transaction": true, "steps": steps});
        let reply = spindle.post("/alpha", &plan.to_string()).await;
        // The call and its statement share the timeout: either may end first.
        assert!(
            [500, 504].contains(&reply.status),
            "{} {}",
            reply.status,
            reply.body
        );
        assert!(
            started.elapsed() < Duration::from_secs(ALPHA_TIMEOUT_SECS + 10),
            "the endless statement held the call for {:?}",
            started.elapsed()
        );
    }
    let write = json!({"steps": [{"execute": "INSERT INTO items (id, name) VALUES (1, 'after')"}]});
    let (status, body) = run(&spindle, "alpha", write).await;
    assert_eq!(status, 200, "a write after the endless statement: {body}");
    if let Backend::Postgres = backend {
        let server = sqlx::PgPool::connect(&postgres_url())
            .await
            .expect("connect");
        let [app_role, _] = database_roles(&app.postgres_urls[0]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active'",
            )
            .bind(&app_role)
            .fetch_one(&server)
            .await
            .expect("read pg_stat_activity");
            if running == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{running} statements of {app_role} still run on the server"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server.close().await;
    }
    drop(spindle);
    app.cleanup().await;
}

/// On PostgreSQL each component's statements run as a role of its own:
/// it cannot drop or connect to another component's database, read the
/// outbox, or leave session state for the next call.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_component_roles_reach_only_their_own_database() {
    let app = SqlApp::new(Backend::Postgres, None);
    let spindle = app.start();
    let (alpha_url, beta_url) = (&app.postgres_urls[0], &app.postgres_urls[1]);
    let beta = database_of(beta_url);
    for refused in [
        format!("DROP DATABASE \"{beta}\""),
        format!("DROP DATABASE \"{beta}\" WITH (FORCE)"),
        "SELECT * FROM spindle.spindle_outbox".to_string(),
        "DELETE FROM spindle.spindle_outbox".to_string(),
        "SELECT * FROM spindle._sqlx_migrations".to_string(),
        "CREATE TEMP TABLE leak (v int)".to_string(),
        "CREATE SCHEMA other".to_string(),
        "CREATE ROLE intruder".to_string(),
    ] {
        let (status, body) = run(&spindle, "alpha", json!({"steps": [{"execute": refused}]})).await;
        assert_eq!(status, 500, "`{refused}` was allowed: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "`{refused}`: {error}"
        );
    }
    // The role itself, outside the host: beta's database is closed to it.
    let [alpha_role, _] = database_roles(alpha_url);
    let as_alpha = format!("{}?user={alpha_role}", beta_url);
    let refused = sqlx::PgPool::connect(&as_alpha).await;
    let error = refused
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(error.contains("permission denied for database"), "{error}");

    // Settings one call makes are gone for the next (one connection is
    // pooled while calls come one at a time, so the next call gets it).
    for _ in 0..3 {
        let set = json!({"steps": [
            {"execute": "SET search_path = pg_catalog"},
            {"execute": "SET statement_timeout = 0"},
        ]});
        let (status, body) = run(&spindle, "alpha", set).await;
        assert_eq!(status, 200, "{body}");
        let show = json!({"steps": [
            {"query": "SELECT current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout"},
            {"query": "SELECT count(*) AS n FROM items"},
        ]});
        let (status, body) = run(&spindle, "alpha", show).await;
        assert_eq!(status, 200, "{body}");
        let row = &body["results"][0]["rows"][0];
        assert_eq!(row[0], "\"$user\", public", "{body}");
        assert_eq!(row[1], format!("{ALPHA_TIMEOUT_SECS}s"), "{body}");
    }
    drop(spindle);
    app.cleanup().await;
}

/// Two replicas relay one PostgreSQL outbox: each claims the rows it sends
/// (`FOR UPDATE SKIP LOCKED`), so every row reaches the bus once.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_postgres_database_send_each_outbox_row_once() {
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to NATS");
    let subject = format!("test.outbox.{}", uuid::Uuid::new_v4().simple());
    let mut received = client.subscribe(subject.clone()).await.expect("subscribe");
    client.flush().await.expect("flush the subscription");

    let app = SqlApp::new(Backend::Postgres, Some(&nats_url()));
    let first = app.start();
    let second = app.start();
    let alpha = AlphaDatabase::open(&app, Backend::Postgres).await;
    let AlphaDatabase::Postgres(pool) = &alpha else {
        unreachable!("opened on PostgreSQL");
    };
    // Written behind the hosts' backs in one go, so both relays find them
    // on their next sweep (within 2 s) and work through them together.
    let rows = 3000;
    sqlx::query(
        "INSERT INTO spindle.spindle_outbox (subject, body, headers) \
         SELECT $1, convert_to('row ' || n, 'UTF8'), '[]' FROM generate_series(1, $2) AS n",
    )
    .bind(&subject)
    .bind(rows)
    .execute(pool)
    .await
    .expect("write the outbox rows");

    let mut bodies = std::collections::HashMap::<String, usize>::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while bodies.len() < rows as usize {
        let message = tokio::time::timeout_at(deadline, received.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {rows} rows arrived", bodies.len()))
            .expect("the subscription ended");
        *bodies
            .entry(String::from_utf8_lossy(&message.payload).into_owned())
            .or_default() += 1;
    }
    // Anything sent twice would follow its first copy closely.
    client.flush().await.expect("flush");
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), received.next()).await
    {
        *bodies
            .entry(String::from_utf8_lossy(&message.payload).into_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = bodies.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        twice.is_empty(),
        "{} rows were sent more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    drop((first, second));
    alpha.close().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_sandbox_refuses_other_files_and_host_tables() {
    a_component_reaches_only_its_own_tables().await;
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $scenario() { super::$scenario(super::Backend::Sqlite).await })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $scenario() { super::$scenario(super::Backend::Postgres).await })*
        }
    };
}

on_both_backends!(
    crud,
    failed_transaction_leaves_nothing,
    components_cannot_see_each_others_tables,
    migrations_apply_once_and_data_survives_a_restart,
    broken_migration_stops_start_up_naming_the_file,
    changed_migration_is_refused,
    outbox_delivers_committed_messages_and_not_rolled_back_ones,
    outbox_messages_survive_a_kill_before_relay,
    undeliverable_outbox_rows_are_set_aside_and_later_events_arrive,
    outbox_refuses_subjects_the_manifest_does_not_allow,
    a_query_returning_a_gigabyte_is_refused_at_the_cap,
    a_statement_that_never_ends_is_cancelled_at_the_timeout,
);
