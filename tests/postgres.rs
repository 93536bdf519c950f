//! `spin:postgres` end to end: the real binary runs the `postgres-client`
//! guest (spin-sdk 7's `pg` module, used as a Spin app would) against the
//! local PostgreSQL server.

mod support;

use support::services::postgres_url;
use support::{App, Reply, Spindle, http_manifest};

/// An app whose one component may reach the test server, granted through a
/// `{{ db_host }}` template, and is told of an address it may not reach.
fn start() -> (App, Spindle) {
    let url = postgres_url();
    let (host, port) = host_and_port(&url);
    let denied = url.replacen(&format!(":{port}"), ":6543", 1);
    let manifest = format!(
        "{}allowed_outbound_hosts = [\"postgres://{{{{ db_host }}}}:{port}\"]\n\
         [component.pg.environment]\nDB_URL = \"{url}\"\nDENIED_URL = \"{denied}\"\n\
         [variables]\ndb_host = {{ default = \"{host}\" }}\n",
        http_manifest(&[("/...", "pg", "postgres-client")])
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    (app, spindle)
}

/// `postgres://user@host:port/db` → (host, port); the test URL names a port.
fn host_and_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().expect("a numeric port")),
        None => (host_port.to_string(), 5432),
    }
}

fn ok_body(reply: &Reply) -> &str {
    assert_eq!(reply.status, 200, "the guest failed: {}", reply.body);
    &reply.body
}

/// One `column: type = value` line per column, as the guest reads back the
/// row it inserted with one parameter of every `parameter-value` variant.
const ROUND_TRIP: &str = r#"inserted 1
b: DbDataType::Boolean = DbValue::Boolean(true)
small_from_s8: DbDataType::Int16 = DbValue::Int16(-8)
i16: DbDataType::Int16 = DbValue::Int16(-16)
i32: DbDataType::Int32 = DbValue::Int32(32)
i64: DbDataType::Int64 = DbValue::Int64(-64)
f32: DbDataType::Floating32 = DbValue::Floating32(1.5)
f64: DbDataType::Floating64 = DbValue::Floating64(-2.25)
s: DbDataType::Str = DbValue::Str("héllo")
bin: DbDataType::Binary = DbValue::Binary([0, 1, 254, 255])
d: DbDataType::Date = DbValue::Date((2024, 2, 29))
t: DbDataType::Time = DbValue::Time((13, 14, 15, 123456000))
dt: DbDataType::Datetime = DbValue::Datetime((1999, 12, 31, 23, 59, 58, 500000000))
ts: DbDataType::Datetime = DbValue::Datetime((2023, 11, 14, 22, 13, 20, 0))
u: DbDataType::Uuid = DbValue::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
j: DbDataType::Jsonb = Jsonb({"k":[1,"two",null]})
dec: DbDataType::Decimal = DbValue::Decimal("12345.6789")
r32: DbDataType::RangeInt32 = DbValue::RangeInt32((Some((1, RangeBoundKind::Inclusive)), Some((10, RangeBoundKind::Exclusive))))
r64: DbDataType::RangeInt64 = DbValue::RangeInt64((Some((-5, RangeBoundKind::Inclusive)), None))
rdec: DbDataType::RangeDecimal = DbValue::RangeDecimal((Some(("0.5", RangeBoundKind::Exclusive)), Some(("2.5", RangeBoundKind::Inclusive))))
a32: DbDataType::ArrayInt32 = DbValue::ArrayInt32([Some(1), None, Some(3)])
a64: DbDataType::ArrayInt64 = DbValue::ArrayInt64([Some(1099511627776)])
adec: DbDataType::ArrayDecimal = DbValue::ArrayDecimal([Some("1.10"), None])
astr: DbDataType::ArrayStr = DbValue::ArrayStr([Some("a"), None])
iv: DbDataType::Interval = DbValue::Interval(Interval { micros: 1500000, days: 2, months: 3 })
nothing: DbDataType::Str = DbValue::DbNull
addr: DbDataType::Other("inet") = DbValue::Unsupported([2, 32, 0, 4, 10, 0, 0, 1])
who: DbDataType::Str = DbValue::Str("postgres")
i32 by name: Some(32)
empty: 25 columns, 0 rows
updated 1
"#;

#[tokio::test]
async fn every_value_type_round_trips_through_the_async_functions() {
    let (_app, spindle) = start();

    let reply = spindle.get("/roundtrip/async").await;

    assert_eq!(ok_body(&reply), ROUND_TRIP);
}

#[tokio::test]
async fn every_value_type_round_trips_through_the_sync_functions() {
    let (_app, spindle) = start();

    let reply = spindle.get("/roundtrip/sync").await;

    assert_eq!(ok_body(&reply), ROUND_TRIP);
}

#[tokio::test]
async fn a_pooled_connection_comes_back_without_the_last_guests_temp_table() {
    let (_app, spindle) = start();

    // Each run creates the same temporary table: the second would fail if
    // the session it gets from the pool still had the first one's.
    for _ in 0..3 {
        let reply = spindle.get("/roundtrip/async").await;
        assert_eq!(ok_body(&reply), ROUND_TRIP);
    }
}

#[tokio::test]
async fn connection_builder_opens_an_allowed_address() {
    let (_app, spindle) = start();

    let reply = spindle.get("/builder").await;

    assert_eq!(ok_body(&reply), "Some(2)\n");
}

#[tokio::test]
async fn one_statement_text_takes_parameters_of_different_types() {
    let (_app, spindle) = start();

    let reply = spindle.get("/retyped").await;

    assert_eq!(
        ok_body(&reply),
        "DbValue::Int32(7)\nDbValue::Floating64(7.5)\n"
    );
}

#[tokio::test]
async fn server_errors_reach_the_guest_with_their_sqlstate() {
    let (_app, spindle) = start();

    let reply = spindle.get("/bad-sql").await;

    assert_eq!(reply.status, 500, "{reply:?}");
    for part in [
        "QueryFailed(QueryError::DbError(DbError {",
        "severity: \"ERROR\"",
        "code: \"42P01\"",
        "message: \"relation \\\"no_such_table\\\" does not exist\"",
    ] {
        assert!(reply.body.contains(part), "no {part} in {}", reply.body);
    }
}

#[tokio::test]
async fn a_collected_query_of_a_gigabyte_fails_at_the_cap_and_the_host_stays_small() {
    let (_app, spindle) = start();

    let reply = spindle.get("/gigabyte").await;

    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("64 MiB"), "{}", reply.body);
    let peak = spindle.peak_resident_memory_bytes();
    assert!(
        peak < 300 << 20,
        "the host's peak RSS was {} MiB",
        peak >> 20
    );
    assert_eq!(spindle.get("/builder").await.status, 200);
}

#[tokio::test]
async fn address_outside_allowed_outbound_hosts_is_denied_with_connection_failed() {
    let (_app, spindle) = start();

    let reply = spindle.get("/denied").await;

    assert_eq!(reply.status, 500, "{reply:?}");
    assert_eq!(
        reply.body,
        "PgError(Error::ConnectionFailed(\"access denied: the component's \
         allowed_outbound_hosts does not include this address\"))"
    );
}
