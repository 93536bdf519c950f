//! Test guest: exercises `spin:postgres` the way a Spin app does, through
//! spin-sdk 7's `pg` module, and answers with a text dump the tests assert on.
//!
//! The server's address comes from the `DB_URL` environment variable (set in
//! the manifest); `DENIED_URL` is one the manifest does not allow. Routes:
//!
//! - `/roundtrip/async` and `/roundtrip/sync`: creates a temporary table with
//!   a column per parameter type, inserts one row through parameters, and
//!   answers one `column: type = value` line per column read back, then the
//!   column count of an empty result and the rows an `UPDATE` affected.
//! - `/builder`: opens through `Connection::open_with_options` and selects 1.
//! - `/retyped`: runs one statement text with an `int4`, then a `float8`
//!   parameter, and answers both values read back.
//! - `/bad-sql`: queries a table that does not exist; answers 500 with the error.
//! - `/gigabyte`: a collected (synchronous) query whose rows come to 1 GiB;
//!   answers 500 with the error.
//! - `/denied`: opens `DENIED_URL`; answers 500 with the error.
//!
//! Errors answer 500 with their `Debug` text.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::pg::wit::postgres as sync_pg;
use spin_sdk::pg::{
    Column, Connection, DbValue, Decode, Interval, OpenOptions, ParameterValue, RangeBoundKind,
};

const CREATE_TABLE: &str = "CREATE TEMP TABLE everything (
    b bool, small_from_s8 int2, i16 int2, i32 int4, i64 int8, f32 float4, f64 float8,
    s text, bin bytea, d date, t time, dt timestamp, ts timestamptz, u uuid, j jsonb,
    dec numeric, r32 int4range, r64 int8range, rdec numrange, a32 int4[], a64 int8[],
    adec numeric[], astr text[], iv interval, nothing text)";

const INSERT: &str = "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
    $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)";

/// Everything selected back, plus two columns computed by the server: a type
/// the interface has no variant for, and a `name`.
const SELECT: &str = "SELECT *, '10.0.0.1'::inet AS addr, current_user AS who FROM everything";

/// One value of every `parameter-value` variant, in `CREATE_TABLE`'s order.
fn parameters() -> Vec<ParameterValue> {
    use RangeBoundKind::{Exclusive, Inclusive};
    vec![
        true.into(),
        (-8i8).into(),
        (-16i16).into(),
        32i32.into(),
        (-64i64).into(),
        1.5f32.into(),
        (-2.25f64).into(),
        "héllo".to_string().into(),
        vec![0u8, 1, 254, 255].into(),
        ParameterValue::Date((2024, 2, 29)),
        ParameterValue::Time((13, 14, 15, 123_456_000)),
        ParameterValue::Datetime((1999, 12, 31, 23, 59, 58, 500_000_000)),
        ParameterValue::Timestamp(1_700_000_000),
        ParameterValue::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ParameterValue::Jsonb(br#"{"k": [1, "two", null]}"#.to_vec()),
        ParameterValue::Decimal("12345.6789".into()),
        (1..10).into(),
        ParameterValue::RangeInt64((Some((-5, Inclusive)), None)),
        ParameterValue::RangeDecimal((
            Some(("0.5".into(), Exclusive)),
            Some(("2.5".into(), Inclusive)),
        )),
        vec![Some(1), None, Some(3)].into(),
        vec![Some(1i64 << 40)].into(),
        ParameterValue::ArrayDecimal(vec![Some("1.10".into()), None]),
        vec![Some("a".to_string()), None].into(),
        Interval {
            micros: 1_500_000,
            days: 2,
            months: 3,
        }
        .into(),
        ParameterValue::DbNull,
    ]
}

#[http_service]
async fn handle(req: Request) -> Result<impl IntoResponse, http::Error> {
    let result = match req.uri().path() {
        "/roundtrip/async" => roundtrip_async().await,
        "/roundtrip/sync" => roundtrip_sync(),
        "/builder" => builder().await,
        "/retyped" => retyped().await,
        "/bad-sql" => bad_sql().await,
        "/gigabyte" => gigabyte(),
        "/denied" => denied().await,
        other => Err(format!("no route {other}")),
    };
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(error) => (500, error),
    };
    http::Response::builder().status(status).body(body)
}

fn gigabyte() -> Result<String, String> {
    let db = sync_pg::Connection::open(&db_url()?).map_err(debug)?;
    let rows = db
        .query(
            "SELECT repeat('x', 1048576) FROM generate_series(1, 1024)",
            &[],
        )
        .map_err(debug)?;
    Ok(format!("{} rows\n", rows.rows.len()))
}

fn db_url() -> Result<String, String> {
    std::env::var("DB_URL").map_err(|_| "DB_URL is not set".to_string())
}

async fn roundtrip_async() -> Result<String, String> {
    let db = Connection::open(db_url()?).await.map_err(debug)?;
    db.execute(CREATE_TABLE, []).await.map_err(debug)?;
    let inserted = db.execute(INSERT, parameters()).await.map_err(debug)?;

    let result = db.query(SELECT, []).await.map_err(debug)?;
    let columns = result.columns().to_vec();
    let rows = result.collect().await.map_err(debug)?;
    let values: Vec<DbValue> = (0..columns.len()).map(|i| rows[0][i].clone()).collect();
    // What a Spin app usually does: read a column by name as a Rust type.
    let by_name: Option<i32> = rows[0].get("i32");

    let empty = db
        .query("SELECT * FROM everything WHERE false", [])
        .await
        .map_err(debug)?;
    let empty_columns = empty.columns().len();
    let empty_rows = empty.collect().await.map_err(debug)?.len();
    let updated = db
        .execute(
            "UPDATE everything SET i32 = $1 WHERE i32 = $2",
            [33.into(), 32.into()],
        )
        .await
        .map_err(debug)?;
    Ok(format!(
        "inserted {inserted}\n{}i32 by name: {by_name:?}\nempty: {empty_columns} columns, {empty_rows} rows\nupdated {updated}\n",
        dump(&columns, &values)
    ))
}

/// The same through the synchronous functions, as older Spin apps call them.
fn roundtrip_sync() -> Result<String, String> {
    let db = sync_pg::Connection::open(&db_url()?).map_err(debug)?;
    db.execute(CREATE_TABLE, &[]).map_err(debug)?;
    let inserted = db.execute(INSERT, &parameters()).map_err(debug)?;
    let result = db.query(SELECT, &[]).map_err(debug)?;
    let by_name = result
        .columns
        .iter()
        .position(|c| c.name == "i32")
        .map(|i| i32::decode(&result.rows[0][i]));
    let empty = db
        .query("SELECT * FROM everything WHERE false", &[])
        .map_err(debug)?;
    let updated = db
        .execute(
            "UPDATE everything SET i32 = $1 WHERE i32 = $2",
            &[33.into(), 32.into()],
        )
        .map_err(debug)?;
    Ok(format!(
        "inserted {inserted}\n{}i32 by name: {:?}\nempty: {} columns, {} rows\nupdated {updated}\n",
        dump(&result.columns, &result.rows[0]),
        by_name.and_then(Result::ok),
        empty.columns.len(),
        empty.rows.len(),
    ))
}

async fn builder() -> Result<String, String> {
    let db = Connection::open_with_options(db_url()?, OpenOptions::default())
        .await
        .map_err(debug)?;
    let rows = db
        .query("SELECT $1::int4 + 1 AS two", [1.into()])
        .await
        .map_err(debug)?
        .collect()
        .await
        .map_err(debug)?;
    Ok(format!("{:?}\n", rows[0].get::<i32>("two")))
}

async fn retyped() -> Result<String, String> {
    let db = Connection::open(db_url()?).await.map_err(debug)?;
    let mut out = String::new();
    for value in [ParameterValue::Int32(7), ParameterValue::Floating64(7.5)] {
        let rows = db
            .query("SELECT $1 AS v", [value])
            .await
            .map_err(debug)?
            .collect()
            .await
            .map_err(debug)?;
        out += &format!("{:?}\n", rows[0][0]);
    }
    Ok(out)
}

async fn bad_sql() -> Result<String, String> {
    let db = Connection::open(db_url()?).await.map_err(debug)?;
    match db.query("SELECT * FROM no_such_table", []).await {
        Ok(_) => Ok("query succeeded\n".into()),
        Err(error) => Err(format!("{error:?}")),
    }
}

async fn denied() -> Result<String, String> {
    let url = std::env::var("DENIED_URL").map_err(|_| "DENIED_URL is not set".to_string())?;
    match Connection::open(url).await {
        Ok(_) => Ok("opened\n".into()),
        Err(error) => Err(format!("{error:?}")),
    }
}

fn dump(columns: &[Column], values: &[DbValue]) -> String {
    columns
        .iter()
        .zip(values)
        .map(|(column, value)| {
            let value = match value {
                DbValue::Jsonb(json) => format!("Jsonb({})", String::from_utf8_lossy(json)),
                other => format!("{other:?}"),
            };
            format!("{}: {:?} = {value}\n", column.name, column.data_type)
        })
        .collect()
}

fn debug(error: impl std::fmt::Debug) -> String {
    format!("{error:?}")
}
