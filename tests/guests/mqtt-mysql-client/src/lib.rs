//! Test guest for the WASI 0.3 interfaces `spin:mqtt/mqtt@3.0.0` and
//! `spin:mysql/mysql@3.0.0`:
//!
//! - `GET /mqtt` publishes `x-mqtt-payload` on `x-mqtt-topic` at QoS
//!   `x-mqtt-qos` through the broker `x-mqtt-address`;
//! - `GET /mysql?table=<name>` on the server `x-mysql-address` makes the
//!   table, inserts typed rows, streams them back and compares, and checks
//!   that a date fails the query's outcome with `value-conversion-failed`.
//!
//! Each answers 200 `ok`, 403 with the interface's error name when `open`
//! is refused, or 500 with what went wrong.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::mqtt::{self, Qos};
use spin_sdk::mysql::{self, DbDataType, DbValue, MysqlError, ParameterValue as P};

#[http_service]
async fn run(req: Request) -> Result<impl IntoResponse, http::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let outcome = match req.uri().path() {
        "/mqtt" => {
            publish(
                &header("x-mqtt-address"),
                &header("x-mqtt-topic"),
                &header("x-mqtt-qos"),
                header("x-mqtt-payload"),
            )
            .await
        }
        "/mysql" => {
            let table = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("table="))
                .unwrap_or("v3_mysql")
                .to_owned();
            exercise_mysql(&header("x-mysql-address"), &table).await
        }
        other => Err((404, format!("no route {other}"))),
    };
    let (status, body) = match outcome {
        Ok(()) => (200, "ok".to_owned()),
        Err(failure) => failure,
    };
    http::Response::builder().status(status).body(body)
}

async fn publish(
    address: &str,
    topic: &str,
    qos: &str,
    payload: String,
) -> Result<(), (u16, String)> {
    let qos = match qos {
        "0" => Qos::AtMostOnce,
        "2" => Qos::ExactlyOnce,
        _ => Qos::AtLeastOnce,
    };
    let connection = mqtt::Connection::open(address, "", "", 30)
        .await
        .map_err(|error| (403, mqtt_name(&error).to_owned()))?;
    connection
        .publish(topic, payload.into_bytes(), qos)
        .await
        .map_err(|error| (500, format!("publish: {}: {error:?}", mqtt_name(&error))))
}

fn mqtt_name(error: &mqtt::Error) -> &'static str {
    match error {
        mqtt::Error::InvalidAddress => "invalid-address",
        mqtt::Error::TooManyConnections => "too-many-connections",
        mqtt::Error::ConnectionFailed(_) => "connection-failed",
        mqtt::Error::Other(_) => "other",
    }
}

fn mysql_name(error: &MysqlError) -> &'static str {
    match error {
        MysqlError::ConnectionFailed(_) => "connection-failed",
        MysqlError::BadParameter(_) => "bad-parameter",
        MysqlError::QueryFailed(_) => "query-failed",
        MysqlError::ValueConversionFailed(_) => "value-conversion-failed",
        MysqlError::Other(_) => "other",
    }
}

fn fail(step: &'static str) -> impl Fn(mysql::Error) -> (u16, String) {
    move |error| (500, format!("{step}: {error:?}"))
}

/// Compares by the values' debug form: the SDK's value types have no `PartialEq`.
fn check<T: std::fmt::Debug>(step: &str, got: T, want: T) -> Result<(), (u16, String)> {
    if format!("{got:?}") == format!("{want:?}") {
        Ok(())
    } else {
        Err((500, format!("{step}: got {got:?}, want {want:?}")))
    }
}

async fn exercise_mysql(address: &str, table: &str) -> Result<(), (u16, String)> {
    let db = match mysql::Connection::open(address).await {
        Ok(db) => db,
        Err(mysql::Error::MysqlError(error)) => return Err((403, mysql_name(&error).to_owned())),
        Err(error) => return Err((500, format!("open: {error:?}"))),
    };
    db.execute(format!("DROP TABLE IF EXISTS {table}"), [])
        .await
        .map_err(fail("drop"))?;
    db.execute(
        format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, small SMALLINT UNSIGNED,
             big BIGINT, ratio DOUBLE, name VARCHAR(50), data BLOB, maybe INT NULL)"
        ),
        [],
    )
    .await
    .map_err(fail("create"))?;
    let insert = format!(
        "INSERT INTO {table} (id, small, big, ratio, name, data, maybe) VALUES (?, ?, ?, ?, ?, ?, ?)"
    );
    for id in 1..=3 {
        db.execute(
            insert.clone(),
            [
                P::Int32(id),
                P::Uint16(60_000),
                P::Int64(-(i64::from(id) << 40)),
                P::Floating64(f64::from(id) / 4.0),
                P::Str(format!("row {id}")),
                P::Binary(vec![id as u8; 3]),
                if id == 2 {
                    P::DbNull
                } else {
                    P::Int32(id * 10)
                },
            ],
        )
        .await
        .map_err(fail("insert"))?;
    }

    let result = db
        .query(
            format!("SELECT id, small, big, ratio, name, data, maybe FROM {table} WHERE id > ? ORDER BY id"),
            [P::Int32(1)],
        )
        .await
        .map_err(fail("select"))?;
    let types: Vec<_> = result.columns().iter().map(|c| c.data_type).collect();
    check(
        "column types",
        types,
        vec![
            DbDataType::Int32,
            DbDataType::Uint16,
            DbDataType::Int64,
            DbDataType::Floating64,
            DbDataType::Str,
            DbDataType::Binary,
            DbDataType::Int32,
        ],
    )?;
    let rows = result.collect().await.map_err(fail("rows"))?;
    check("row count", rows.len(), 2)?;
    let values: Vec<Vec<DbValue>> = rows
        .iter()
        .map(|row| (0..7).map(|index| row[index].clone()).collect())
        .collect();
    check(
        "rows",
        values,
        vec![
            vec![
                DbValue::Int32(2),
                DbValue::Uint16(60_000),
                DbValue::Int64(-(2 << 40)),
                DbValue::Floating64(0.5),
                DbValue::Str("row 2".into()),
                DbValue::Binary(vec![2; 3]),
                DbValue::DbNull,
            ],
            vec![
                DbValue::Int32(3),
                DbValue::Uint16(60_000),
                DbValue::Int64(-(3 << 40)),
                DbValue::Floating64(0.75),
                DbValue::Str("row 3".into()),
                DbValue::Binary(vec![3; 3]),
                DbValue::Int32(30),
            ],
        ],
    )?;

    // A value the interface cannot carry fails the query's outcome, after
    // the columns were announced.
    let dates = db
        .query("SELECT CAST('2024-01-02' AS DATE) AS day", [])
        .await
        .map_err(fail("select a date"))?;
    check(
        "date column",
        dates.columns()[0].data_type,
        DbDataType::Other,
    )?;
    match dates.collect().await {
        Err(mysql::Error::MysqlError(MysqlError::ValueConversionFailed(_))) => {}
        other => {
            return Err((
                500,
                format!("a date: got {:?}", other.map(|rows| rows.len())),
            ));
        }
    }
    match db.query("SELECT * FROM no_such_table_anywhere", []).await {
        Err(mysql::Error::MysqlError(MysqlError::QueryFailed(_))) => {}
        Err(error) => return Err((500, format!("missing table: got {error:?}"))),
        Ok(_) => return Err((500, "missing table: the query succeeded".into())),
    }
    Ok(())
}
