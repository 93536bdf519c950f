//! Outbound MySQL end to end against the local MariaDB: a spin-sdk 5 guest
//! (built for `wasm32-wasip1`, as Spin's templates build it) makes a table
//! through `fermyon:spin/mysql@2.0.0`, writes typed rows and reads them back,
//! and the test then reads the table with its own client; a spin-sdk 7
//! guest does the same through `spin:mysql/mysql@3.0.0`, whose rows stream. Servers outside the
//! component's `allowed_outbound_hosts` are `connection-failed`, as in Spin.

mod support;

use sqlx::Row;
use sqlx::mysql::MySqlPoolOptions;
use support::{App, Spindle, core_module_wasm, guest_wasm, services::mysql_url};

/// The app: one route to the sdk5-mysql guest, allowed to reach `allowed`.
fn start(allowed: &str) -> (App, Spindle) {
    start_guest(&core_module_wasm("sdk5-mysql", "wasm32-wasip1"), allowed)
}

/// The app: every path to the guest `wasm`, allowed to reach `allowed`.
fn start_guest(wasm: &std::path::Path, allowed: &str) -> (App, Spindle) {
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"mysql\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"client\"\n\
         [component.client]\nsource = \"{}\"\nallowed_outbound_hosts = [\"{allowed}\"]\n",
        wasm.display()
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    (app, spindle)
}

async fn call(spindle: &Spindle, address: &str, table: &str) -> (u16, String) {
    call_path(spindle, "/", address, table).await
}

async fn call_path(spindle: &Spindle, path: &str, address: &str, table: &str) -> (u16, String) {
    let reply = spindle
        .send_with_headers(
            reqwest::Method::GET,
            &format!("{path}?table={table}"),
            &[("x-mysql-address", address)],
            None,
        )
        .await;
    (reply.status, reply.body)
}

/// `host:port` of a `mysql://` URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

#[tokio::test]
async fn a_guest_writes_typed_rows_that_the_server_holds() {
    let url = mysql_url();
    let (_app, spindle) = start(&format!("mysql://{}", authority(&url)));
    let table = format!("sdk5_mysql_{}", std::process::id());

    let (status, body) = call(&spindle, &url, &table).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "spindle's log:\n{}",
        spindle.stderr()
    );

    // Read back with the test's own client: the rows are on the server.
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("the test connects to MySQL");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, flag, tiny, small, big, ubig, utiny, precise, name, data, maybe \
         FROM {table} ORDER BY id"
    )))
    .fetch_all(&pool)
    .await
    .expect("reading the guest's table");
    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!(first.get::<i32, _>("id"), 1);
    assert!(first.get::<bool, _>("flag"));
    assert_eq!(first.get::<i8, _>("tiny"), -7);
    assert_eq!(first.get::<i16, _>("small"), -300);
    assert_eq!(first.get::<i64, _>("big"), -9_000_000_000);
    assert_eq!(first.get::<u64, _>("ubig"), 18_000_000_000_000_000_000);
    assert_eq!(first.get::<u8, _>("utiny"), 250);
    assert_eq!(first.get::<f64, _>("precise"), 2.25);
    assert_eq!(first.get::<String, _>("name"), "héllo");
    assert_eq!(first.get::<Vec<u8>, _>("data"), vec![0, 1, 2, 255]);
    assert_eq!(first.get::<Option<i32>, _>("maybe"), None);
    assert_eq!(rows[1].get::<Option<i32>, _>("maybe"), Some(42));
    assert!(!rows[1].get::<bool, _>("flag"));

    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .expect("dropping the guest's table");
}

#[tokio::test]
async fn a_server_outside_allowed_outbound_hosts_is_connection_failed() {
    let url = mysql_url();
    let (_app, spindle) = start("mysql://db.internal:3306");
    let (status, body) = call(&spindle, &url, "never_made").await;
    assert_eq!((status, body.as_str()), (403, "connection-failed"));
}

#[tokio::test]
async fn an_allowed_server_that_refuses_the_login_is_connection_failed() {
    let url = mysql_url();
    let authority = authority(&url);
    let (_app, spindle) = start(&format!("mysql://{authority}"));
    let address = format!("mysql://no_such_user:nope@{authority}/test");
    let (status, body) = call(&spindle, &address, "never_made").await;
    assert_eq!((status, body.as_str()), (403, "connection-failed"));
}

#[tokio::test]
async fn a_spin_sdk_7_guest_streams_rows_through_spin_mysql_3() {
    let url = mysql_url();
    let (_app, spindle) = start_guest(
        &guest_wasm("mqtt-mysql-client"),
        &format!("mysql://{}", authority(&url)),
    );
    let table = format!("v3_mysql_{}", std::process::id());

    let (status, body) = call_path(&spindle, "/mysql", &url, &table).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "spindle's log:\n{}",
        spindle.stderr()
    );

    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("the test connects to MySQL");
    let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM {table} ORDER BY id"
    )))
    .fetch_all(&pool)
    .await
    .expect("reading the guest's table");
    assert_eq!(names, ["row 1", "row 2", "row 3"]);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .expect("dropping the guest's table");

    let (status, body) = call_path(
        &spindle,
        "/mysql",
        "mysql://root@db.internal:3306/test",
        "never_made",
    )
    .await;
    assert_eq!((status, body.as_str()), (403, "connection-failed"));
}
