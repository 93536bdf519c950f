//! Apps built with older Rust spin-sdk versions run unchanged: spin-sdk 3.x
//! guests built for wasm32-wasip1 (core modules, componentized at load, as
//! Spin's templates build them) and spin-sdk 5.x guests built for
//! wasm32-wasip2, against the WASI 0.2 interfaces they import
//! (`fermyon:spin/*@2.0.0`, `spin:postgres@3.0.0`/`@4.0.0`, `wasi:http` and
//! `wasi:sockets` 0.2); and a spin-sdk 6 app, built for Spin 4.0 against the
//! WASI 0.3 release candidate. Each guest checks itself and answers `ok`; where the
//! effect is visible from outside (a table, a key, a message, a request),
//! the test checks it with its own client too.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::Response;
use sqlx::Row;

use support::services::{postgres_url, redis_url};
use support::upstream::{Upstream, tcp_echo_server};
use support::{App, Reply, Spindle};

/// A spin-sdk 3.x guest, built as Spin's templates build it.
fn sdk3(guest: &str) -> PathBuf {
    support::core_module_wasm(guest, "wasm32-wasip1")
}

/// A spin-sdk 5.x (or 6) guest, built as a component.
fn sdk5(guest: &str) -> PathBuf {
    support::guest_wasm(guest)
}

/// `[[trigger.http]]` at `/<id>/...` for the component `id` from `source`.
fn component(id: &str, source: &std::path::Path, allowed: &str) -> String {
    format!(
        "\n[[trigger.http]]\nroute = \"/{id}/...\"\ncomponent = \"{id}\"\n\
         [component.{id}]\nsource = \"{}\"\nallowed_outbound_hosts = [{allowed}]\n",
        source.display()
    )
}

fn manifest(name: &str, variables: &str, components: &[String]) -> String {
    format!(
        "spin_manifest_version = 2\n[application]\nname = \"{name}\"\n{variables}{}",
        components.concat()
    )
}

/// Unique among test runs, so runs side by side never share a table or key.
fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{label}_{}_{nanos}", std::process::id())
}

/// `GET path` with one extra header.
async fn get_with(spindle: &Spindle, path: &str, header: (&str, &str)) -> Reply {
    spindle
        .send_with_headers(reqwest::Method::GET, path, &[header], None)
        .await
}

// ---------------------------------------------------------------------------
// Outbound PostgreSQL, Redis, HTTP and TCP sockets.
// ---------------------------------------------------------------------------

/// `fermyon:spin/postgres@2.0.0` and `spin:postgres@3.0.0` from spin-sdk
/// 3.x, and those plus `@4.0.0` from spin-sdk 5.x: each creates its table,
/// inserts through parameters of every type it has and reads the row back;
/// the test finds the row with its own client. An address outside
/// `allowed_outbound_hosts` is each interface's `connection-failed`.
#[tokio::test]
async fn postgres_from_spin_sdk_3_and_5_apps() {
    let url = postgres_url();
    let allowed = "\"postgres://127.0.0.1:5432\"";
    let app = App::new(&manifest(
        "postgres",
        "",
        &[
            component("sdk3", &sdk3("sdk3-postgres"), allowed),
            component("sdk5", &sdk5("sdk5-postgres"), allowed),
        ],
    ));
    let spindle = app.start();
    let server = sqlx::PgPool::connect(&url)
        .await
        .expect("the test connects to PostgreSQL");

    for (component, interface) in [
        ("sdk3", "pg"),
        ("sdk3", "pg3"),
        ("sdk5", "pg"),
        ("sdk5", "pg3"),
        ("sdk5", "pg4"),
    ] {
        let table = unique(&format!("spin_sdk_apps_{component}_{interface}"));
        let reply = get_with(
            &spindle,
            &format!("/{component}/?interface={interface}&table={table}"),
            ("x-postgres", &url),
        )
        .await;
        let label = fetch_label(&server, &table).await;
        drop_table(&server, &table).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "{component} {interface}: {}",
            spindle.stderr()
        );
        let want = match interface {
            "pg" => "héllo",
            "pg3" => "updated",
            _ => "pg4",
        };
        assert_eq!(
            label.as_deref(),
            Some(want),
            "{component} {interface}: the row, read by the test"
        );
    }

    for (component, interface) in [
        ("sdk3", "pg"),
        ("sdk3", "pg3"),
        ("sdk5", "pg"),
        ("sdk5", "pg3"),
        ("sdk5", "pg4"),
    ] {
        let reply = get_with(
            &spindle,
            &format!("/{component}/?interface={interface}&table=never_created"),
            ("x-postgres", "postgres://postgres@localhost:5432/postgres"),
        )
        .await;
        assert_eq!(reply.status, 403, "{component} {interface}: {}", reply.body);
        assert!(
            reply.body.starts_with("connection-failed:")
                && reply.body.contains("allowed_outbound_hosts")
                && !reply.body.contains("localhost"),
            "{component} {interface}: {}",
            reply.body
        );
    }
}

/// The `label` of the row with id 1 in `table`, if the table has exactly
/// that one row.
async fn fetch_label(server: &sqlx::PgPool, table: &str) -> Option<String> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, label FROM {table}"
    )))
    .fetch_all(server)
    .await
    .ok()?;
    match rows.as_slice() {
        [row] if row.try_get::<i32, _>("id").ok() == Some(1) => row.try_get("label").ok(),
        _ => None,
    }
}

async fn drop_table(server: &sqlx::PgPool, table: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(server)
        .await
        .expect("the test drops its table");
}

/// `fermyon:spin/redis@2.0.0` from spin-sdk 3.x and 5.x apps: every call
/// on the allowed server; the test reads the keys the guest left and
/// receives the message it published. An address outside
/// `allowed_outbound_hosts` is `invalid-address`.
#[tokio::test]
async fn redis_from_spin_sdk_3_and_5_apps() {
    let url = redis_url();
    let allowed = format!("\"{url}\"");
    let app = App::new(&manifest(
        "redis",
        "",
        &[
            component("sdk3", &sdk3("sdk3-redis"), &allowed),
            component("sdk5", &sdk5("sdk5-redis"), &allowed),
        ],
    ));
    let spindle = app.start();
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("the test connects to Redis");

    for component in ["sdk3", "sdk5"] {
        let prefix = unique(&format!("spin-sdk-apps:{component}"));
        let mut subscriber = client
            .get_async_pubsub()
            .await
            .expect("the test subscribes to Redis");
        subscriber
            .subscribe(format!("{prefix}:channel"))
            .await
            .expect("subscribe");

        let reply = get_with(
            &spindle,
            &format!("/{component}/?prefix={prefix}"),
            ("x-redis", &url),
        )
        .await;

        let greeting: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}:greeting"))
            .query_async(&mut redis)
            .await
            .expect("GET");
        let members: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(format!("{prefix}:set"))
            .query_async(&mut redis)
            .await
            .expect("SMEMBERS");
        let counter_left: i64 = redis::cmd("EXISTS")
            .arg(format!("{prefix}:counter"))
            .query_async(&mut redis)
            .await
            .expect("EXISTS");
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{prefix}:greeting"))
            .arg(format!("{prefix}:set"))
            .query_async(&mut redis)
            .await
            .expect("DEL");

        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "{component}: {}",
            spindle.stderr()
        );
        assert_eq!(greeting.as_deref(), Some("hello world"), "{component}");
        assert_eq!(
            members,
            BTreeSet::from(["a".to_owned(), "c".to_owned()]),
            "{component}"
        );
        assert_eq!(counter_left, 0, "{component}: del removed the counter");
        let mut messages = subscriber.into_on_message();
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap_or_else(|_| panic!("{component}: no message published within 5s"))
            .expect("the subscription stays open");
        assert_eq!(message.get_payload_bytes(), b"published", "{component}");
    }

    for component in ["sdk3", "sdk5"] {
        for denied in [
            "redis://localhost:6379",
            "redis://127.0.0.1:6380",
            "not a url",
        ] {
            let reply = get_with(
                &spindle,
                &format!("/{component}/?prefix=never"),
                ("x-redis", denied),
            )
            .await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (403, "invalid-address"),
                "{component} → {denied}"
            );
        }
    }
}

/// The upstream's answer: `<method> <path> <body>` of the request.
fn echo(parts: &http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let echo = format!(
        "{} {} {}",
        parts.method,
        parts.uri.path(),
        String::from_utf8_lossy(&body)
    );
    Response::new(Full::new(Bytes::from(echo)))
}

/// `spin_sdk::http::send` from a spin-sdk 5.x app reaches an allowed server
/// (which sees the request); a server outside `allowed_outbound_hosts` is
/// `http-request-denied` and sees nothing.
#[tokio::test]
async fn outbound_http_from_a_spin_sdk_5_app() {
    let (allowed, other) = (Upstream::start(echo).await, Upstream::start(echo).await);
    let app = App::new(&manifest(
        "outbound-http",
        "",
        &[component(
            "sdk5",
            &sdk5("sdk5-outbound-http"),
            &format!("\"http://{}\"", allowed.address()),
        )],
    ));
    let spindle = app.start();

    let reply = spindle
        .get(&format!(
            "/sdk5/?url=http://{}/from-sdk5",
            allowed.address()
        ))
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert_eq!(allowed.requests(), 1, "the allowed server saw the request");

    for url in [
        format!("http://{}/denied", other.address()),
        format!("http://localhost:{}/denied", allowed.address().port()),
    ] {
        let reply = spindle.get(&format!("/sdk5/?url={url}")).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (403, "http-request-denied"),
            "{url}"
        );
    }
    assert_eq!(other.requests(), 0, "nothing reached the denied server");
    assert_eq!(
        allowed.requests(),
        1,
        "nothing more reached the allowed one"
    );
}

/// `wasi:sockets` TCP from a spin-sdk 5.x app through `std::net`: open as
/// far as `allowed_outbound_hosts` allows (an address, a CIDR range, a
/// templated port), `access-denied` for another host, another port, and a
/// component with no entries.
#[tokio::test]
async fn tcp_sockets_from_a_spin_sdk_5_app() {
    let (port, unlisted_port) = (tcp_echo_server().await, tcp_echo_server().await);
    let wasm = sdk5("sdk5-sockets");
    let app = App::new(&manifest(
        "sockets",
        &format!("[variables]\ntcp_port = {{ default = \"{port}\" }}\n"),
        &[
            component("exact", &wasm, &format!("\"*://127.0.0.1:{port}\"")),
            component("range", &wasm, &format!("\"*://127.0.0.0/24:{port}\"")),
            component("templated", &wasm, "\"tcp://127.0.0.1:{{ tcp_port }}\""),
            component("none", &wasm, ""),
        ],
    ));
    let spindle = app.start();
    let connect = |component: &str, address: String| {
        let path = format!("/{component}/?addr={address}");
        let spindle = &spindle;
        async move { spindle.get(&path).await }
    };

    for component in ["exact", "range", "templated"] {
        let reply = connect(component, format!("127.0.0.1:{port}")).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "{component}"
        );
    }
    for (component, address) in [
        ("exact", format!("127.0.0.1:{unlisted_port}")),
        ("exact", format!("127.0.0.2:{port}")),
        ("range", format!("127.0.1.1:{port}")),
        ("templated", format!("127.0.0.1:{unlisted_port}")),
        ("none", format!("127.0.0.1:{port}")),
    ] {
        let reply = connect(component, address.clone()).await;
        assert_eq!(reply.status, 403, "{component} → {address}: {}", reply.body);
        assert!(
            reply.body.starts_with("access-denied"),
            "{component} → {address}: {}",
            reply.body
        );
    }
}

// ---------------------------------------------------------------------------
// Spin 4.0: spin-sdk 6 and WASI 0.3.0-rc-2026-03-15.
// ---------------------------------------------------------------------------

/// A spin-sdk 6 app imports and exports `wasi:*@0.3.0-rc-2026-03-15`: it
/// serves HTTP, keeps a value in the key-value store from one request to
/// the next, reads a variable, and reaches an allowed server but not
/// another one.
#[tokio::test]
async fn a_spin_4_0_app_built_with_spin_sdk_6() {
    let (allowed, other) = (Upstream::start(echo).await, Upstream::start(echo).await);
    let app = App::new(&format!(
        "{}key_value_stores = [\"default\"]\n[component.sdk6.variables]\ngreeting = \"{{{{ greeting }}}}\"\n",
        manifest(
            "spin-4-0",
            "[variables]\ngreeting = { default = \"hej\" }\n",
            &[component(
                "sdk6",
                &sdk5("sdk6-app"),
                &format!("\"http://{}\"", allowed.address()),
            )],
        )
    ));
    let spindle = app.start();

    let reply = spindle.get("/sdk6/hello").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello from spin-sdk 6"),
        "{}",
        spindle.stderr()
    );

    let key = unique("sdk6");
    assert_eq!(
        spindle.get(&format!("/sdk6/kv/get?{key}")).await.status,
        404
    );
    let reply = spindle.get(&format!("/sdk6/kv/set?{key}=kept")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "stored"));
    let reply = spindle.get(&format!("/sdk6/kv/get?{key}")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "kept"));

    let reply = spindle.get("/sdk6/variable?greeting").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hej"));

    let reply = spindle
        .get(&format!("/sdk6/outbound?http://{}/hi", allowed.address()))
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "200\nGET /hi "));
    let reply = spindle
        .get(&format!("/sdk6/outbound?http://{}/hi", other.address()))
        .await;
    assert_eq!(reply.status, 500);
    assert!(reply.body.contains("HttpRequestDenied"), "{}", reply.body);
    assert_eq!(other.requests(), 0, "nothing reached the denied server");
}
