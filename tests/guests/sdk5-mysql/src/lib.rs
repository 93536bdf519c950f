//! Checks `fermyon:spin/mysql@2.0.0` as an app built with this spin-sdk uses
//! it: `GET /?table=<name>` on the server named by `x-mysql-address` makes
//! the table, inserts rows with parameters of every type, reads them back
//! and compares values and column types, checks that a bad statement is
//! `query-failed` and a date `value-conversion-failed` (as in Spin), and
//! answers 200 `ok`, or 500 with what went wrong. The table is left for the
//! test to read with its own client. An address the host refuses at `open`
//! answers 403 with the interface's error name.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::mysql::{Connection, DbDataType, DbValue, MysqlError, ParameterValue as P};

#[http_component]
fn handle(request: Request) -> Response {
    let address = request
        .header("x-mysql-address")
        .and_then(|value| value.as_str())
        .unwrap_or_default()
        .to_owned();
    let table = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("table="))
        .unwrap_or("sdk5_mysql")
        .to_owned();
    let connection = match Connection::open(&address) {
        Ok(connection) => connection,
        Err(error) => return Response::new(403, name(&error)),
    };
    match exercise(&connection, &table) {
        Ok(()) => Response::new(200, "ok"),
        Err(failure) => Response::new(500, failure),
    }
    .into_response()
}

/// The interface's name for the error's case.
fn name(error: &MysqlError) -> &'static str {
    match error {
        MysqlError::ConnectionFailed(_) => "connection-failed",
        MysqlError::BadParameter(_) => "bad-parameter",
        MysqlError::QueryFailed(_) => "query-failed",
        MysqlError::ValueConversionFailed(_) => "value-conversion-failed",
        MysqlError::Other(_) => "other",
    }
}

fn fail(step: &'static str) -> impl Fn(MysqlError) -> String {
    move |error| format!("{step}: {error:?}")
}

/// Compares by the values' debug form: the SDK's value types have no `PartialEq`.
fn check<T: std::fmt::Debug>(step: &str, got: T, want: T) -> Result<(), String> {
    if format!("{got:?}") == format!("{want:?}") {
        Ok(())
    } else {
        Err(format!("{step}: got {got:?}, want {want:?}"))
    }
}

fn exercise(db: &Connection, table: &str) -> Result<(), String> {
    db.execute(&format!("DROP TABLE IF EXISTS {table}"), &[])
        .map_err(fail("drop"))?;
    db.execute(
        &format!(
            "CREATE TABLE {table} (
                id INT PRIMARY KEY, flag BOOLEAN, tiny TINYINT, small SMALLINT,
                big BIGINT, ubig BIGINT UNSIGNED, utiny TINYINT UNSIGNED,
                ratio FLOAT, precise DOUBLE, name VARCHAR(100), notes TEXT,
                data VARBINARY(100), maybe INT NULL)"
        ),
        &[],
    )
    .map_err(fail("create"))?;
    let insert = format!(
        "INSERT INTO {table} (id, flag, tiny, small, big, ubig, utiny, ratio, precise, name, notes, data, maybe)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    db.execute(
        &insert,
        &[
            P::Int32(1),
            P::Boolean(true),
            P::Int8(-7),
            P::Int16(-300),
            P::Int64(-9_000_000_000),
            P::Uint64(18_000_000_000_000_000_000),
            P::Uint8(250),
            P::Floating32(1.5),
            P::Floating64(2.25),
            P::Str("héllo".into()),
            P::Str("long text".into()),
            P::Binary(vec![0, 1, 2, 255]),
            P::DbNull,
        ],
    )
    .map_err(fail("insert 1"))?;
    db.execute(
        &insert,
        &[
            P::Int32(2),
            P::Boolean(false),
            P::Int8(8),
            P::Int16(16),
            P::Int64(64),
            P::Uint64(0),
            P::Uint8(0),
            P::Floating32(-0.5),
            P::Floating64(1e100),
            P::Str(String::new()),
            P::Str("two".into()),
            P::Binary(Vec::new()),
            P::Int32(42),
        ],
    )
    .map_err(fail("insert 2"))?;

    let rows = db
        .query(
            &format!(
                "SELECT id, flag, tiny, small, big, ubig, utiny, ratio, precise, name, notes, data, maybe
                 FROM {table} WHERE id >= ? ORDER BY id"
            ),
            &[P::Int32(1)],
        )
        .map_err(fail("select"))?;
    let types: Vec<_> = rows.columns.iter().map(|c| c.data_type).collect();
    check(
        "column types",
        types,
        vec![
            DbDataType::Int32,
            DbDataType::Int8,
            DbDataType::Int8,
            DbDataType::Int16,
            DbDataType::Int64,
            DbDataType::Uint64,
            DbDataType::Uint8,
            DbDataType::Floating32,
            DbDataType::Floating64,
            DbDataType::Str,
            DbDataType::Str,
            DbDataType::Binary,
            DbDataType::Int32,
        ],
    )?;
    check("column name", rows.columns[9].name.as_str(), "name")?;
    check("row count", rows.rows.len(), 2)?;
    check(
        "first row",
        &rows.rows[0],
        &vec![
            DbValue::Int32(1),
            DbValue::Int8(1),
            DbValue::Int8(-7),
            DbValue::Int16(-300),
            DbValue::Int64(-9_000_000_000),
            DbValue::Uint64(18_000_000_000_000_000_000),
            DbValue::Uint8(250),
            DbValue::Floating32(1.5),
            DbValue::Floating64(2.25),
            DbValue::Str("héllo".into()),
            DbValue::Str("long text".into()),
            DbValue::Binary(vec![0, 1, 2, 255]),
            DbValue::DbNull,
        ],
    )?;
    check("second row's maybe", &rows.rows[1][12], &DbValue::Int32(42))?;
    check(
        "second row's name",
        &rows.rows[1][9],
        &DbValue::Str(String::new()),
    )?;

    let empty = db
        .query(
            &format!("SELECT name FROM {table} WHERE id = ?"),
            &[P::Int32(99)],
        )
        .map_err(fail("select none"))?;
    check("columns of an empty result", empty.columns.len(), 1)?;
    check("rows of an empty result", empty.rows.len(), 0)?;

    match db.query("SELECT * FROM no_such_table_anywhere", &[]) {
        Err(MysqlError::QueryFailed(_)) => {}
        other => return Err(format!("missing table: got {other:?}")),
    }
    match db.query("SELECT CAST('2024-01-02' AS DATE) AS day", &[]) {
        Err(MysqlError::ValueConversionFailed(_)) => {}
        other => return Err(format!("a date: got {other:?}")),
    }
    Ok(())
}
