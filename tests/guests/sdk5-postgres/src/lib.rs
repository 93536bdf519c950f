//! Checks PostgreSQL as an app built with spin-sdk 5.x uses it:
//! `GET /?interface=<pg|pg3|pg4>&table=<name>`, with the server's address
//! in the `x-postgres` header, opens a connection through `spin_sdk::pg`
//! (`fermyon:spin/postgres@2.0.0`), `spin_sdk::pg3`
//! (`spin:postgres/postgres@3.0.0`) or `spin_sdk::pg4` (`@4.0.0`), creates
//! the table `<name>`, inserts one
//! row through parameters of every type that interface has, reads it back
//! by a parameter and compares. It answers 200 `ok`, 500 with what went
//! wrong, or 403 naming the interface's error when the connection is
//! refused. The table stays, so the caller can check it and drop it.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let address = request
        .header("x-postgres")
        .and_then(|value| value.as_str())
        .unwrap_or_default()
        .to_owned();
    let query = request.query();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
            .to_owned()
    };
    let table = param("table");
    let outcome = match param("interface").as_str() {
        "pg" => v2::exercise(&address, &table),
        "pg3" => v3::exercise(&address, &table),
        "pg4" => v4::exercise(&address, &table),
        other => Err(Failure::Failed(format!("unknown interface `{other}`"))),
    };
    match outcome {
        Ok(()) => Response::new(200, "ok"),
        Err(Failure::Refused(error)) => Response::new(403, error),
        Err(Failure::Failed(reason)) => Response::new(500, reason),
    }
    .into_response()
}

/// Why a check did not pass.
enum Failure {
    /// `open` failed: the interface's error, as `case: message`.
    Refused(String),
    /// Anything after it, with the step that failed.
    Failed(String),
}

fn check(holds: bool, what: &str) -> Result<(), Failure> {
    if holds {
        Ok(())
    } else {
        Err(Failure::Failed(format!("check failed: {what}")))
    }
}

/// `fermyon:spin/postgres@2.0.0`: scalars, and unsigned integers, which the
/// host binds as the next wider signed type.
mod v2 {
    use super::{Failure, check};
    use spin_sdk::pg::{Connection, DbDataType, DbValue, ParameterValue as P, PgError};

    fn error_text(error: &PgError) -> String {
        match error {
            PgError::ConnectionFailed(m) => format!("connection-failed: {m}"),
            PgError::BadParameter(m) => format!("bad-parameter: {m}"),
            PgError::QueryFailed(m) => format!("query-failed: {m}"),
            PgError::ValueConversionFailed(m) => format!("value-conversion-failed: {m}"),
            PgError::Other(m) => format!("other: {m}"),
        }
    }

    fn step(what: &'static str) -> impl Fn(PgError) -> Failure {
        move |error| Failure::Failed(format!("{what}: {}", error_text(&error)))
    }

    pub fn exercise(address: &str, table: &str) -> Result<(), Failure> {
        let db = Connection::open(address).map_err(|e| Failure::Refused(error_text(&e)))?;
        db.execute(
            &format!(
                "CREATE TABLE {table} (id int4 PRIMARY KEY, small int2, big int8, \
                 widened int4, ratio float4, precise float8, flag bool, label text, \
                 data bytea, nothing text)"
            ),
            &[],
        )
        .map_err(step("create"))?;
        let inserted = db
            .execute(
                &format!("INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
                &[
                    P::Int32(1),
                    P::Int16(-2),
                    P::Int64(i64::MAX),
                    P::Uint16(u16::MAX),
                    P::Floating32(1.5),
                    P::Floating64(2.25),
                    P::Boolean(true),
                    P::Str("héllo".into()),
                    P::Binary(vec![0, 1, 255]),
                    P::DbNull,
                ],
            )
            .map_err(step("insert"))?;
        check(inserted == 1, "insert affects one row")?;
        let rows = db
            .query(
                &format!("SELECT * FROM {table} WHERE id = $1 AND widened = $2"),
                &[P::Int32(1), P::Uint64(u64::from(u16::MAX))],
            )
            .map_err(step("select"))?;
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        check(
            names
                == [
                    "id", "small", "big", "widened", "ratio", "precise", "flag", "label", "data",
                    "nothing",
                ],
            "column names",
        )?;
        check(
            matches!(rows.columns[0].data_type, DbDataType::Int32)
                && matches!(rows.columns[7].data_type, DbDataType::Str)
                && matches!(rows.columns[8].data_type, DbDataType::Binary),
            "column types",
        )?;
        check(rows.rows.len() == 1, "one row back")?;
        let row = &rows.rows[0];
        check(matches!(row[0], DbValue::Int32(1)), "int4")?;
        check(matches!(row[1], DbValue::Int16(-2)), "int2")?;
        check(matches!(row[2], DbValue::Int64(i64::MAX)), "int8")?;
        check(matches!(row[3], DbValue::Int32(65535)), "u16 widened")?;
        check(
            matches!(row[4], DbValue::Floating32(v) if v == 1.5),
            "float4",
        )?;
        check(
            matches!(row[5], DbValue::Floating64(v) if v == 2.25),
            "float8",
        )?;
        check(matches!(row[6], DbValue::Boolean(true)), "bool")?;
        check(matches!(&row[7], DbValue::Str(s) if s == "héllo"), "text")?;
        check(
            matches!(&row[8], DbValue::Binary(b) if b == &[0, 1, 255]),
            "bytea",
        )?;
        check(matches!(row[9], DbValue::DbNull), "null")?;
        // Past bigint there is no PostgreSQL type to bind to.
        let refused = db.query("SELECT $1::int8", &[P::Uint64(u64::MAX)]);
        check(
            matches!(refused, Err(PgError::BadParameter(_))),
            "u64 past bigint is bad-parameter",
        )?;
        let missing = db.query("SELECT * FROM no_such_table_here", &[]);
        check(
            matches!(&missing, Err(PgError::QueryFailed(m)) if m.contains("no_such_table_here")),
            "a server error is query-failed with its text",
        )
    }
}

/// `spin:postgres/postgres@3.0.0`: scalars and date-times.
mod v3 {
    use super::{Failure, check};
    use spin_sdk::pg3::{Connection, DbDataType, DbValue, ParameterValue as P, PgError};

    fn error_text(error: &PgError) -> String {
        match error {
            PgError::ConnectionFailed(m) => format!("connection-failed: {m}"),
            PgError::BadParameter(m) => format!("bad-parameter: {m}"),
            PgError::QueryFailed(m) => format!("query-failed: {m}"),
            PgError::ValueConversionFailed(m) => format!("value-conversion-failed: {m}"),
            PgError::Other(m) => format!("other: {m}"),
        }
    }

    fn step(what: &'static str) -> impl Fn(PgError) -> Failure {
        move |error| Failure::Failed(format!("{what}: {}", error_text(&error)))
    }

    pub fn exercise(address: &str, table: &str) -> Result<(), Failure> {
        let db = Connection::open(address).map_err(|e| Failure::Refused(error_text(&e)))?;
        db.execute(
            &format!(
                "CREATE TABLE {table} (id int4 PRIMARY KEY, big int8, precise float8, \
                 flag bool, label text, data bytea, day date, at time, moment timestamp, \
                 stamp timestamptz, nothing text)"
            ),
            &[],
        )
        .map_err(step("create"))?;
        let inserted = db
            .execute(
                &format!(
                    "INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    P::Int32(1),
                    P::Int64(-7),
                    P::Floating64(-0.5),
                    P::Boolean(false),
                    P::Str("pg3".into()),
                    P::Binary(b"bytes".to_vec()),
                    P::Date((2024, 2, 29)),
                    P::Time((23, 59, 58, 0)),
                    P::Datetime((2024, 2, 29, 12, 30, 0, 0)),
                    // 2001-09-09T01:46:40Z
                    P::Timestamp(1_000_000_000),
                    P::DbNull,
                ],
            )
            .map_err(step("insert"))?;
        check(inserted == 1, "insert affects one row")?;
        let rows = db
            .query(
                &format!("SELECT * FROM {table} WHERE day = $1"),
                &[P::Date((2024, 2, 29))],
            )
            .map_err(step("select"))?;
        check(rows.columns.len() == 11, "eleven columns")?;
        check(
            matches!(rows.columns[6].data_type, DbDataType::Date)
                && matches!(rows.columns[8].data_type, DbDataType::Datetime),
            "column types",
        )?;
        check(rows.rows.len() == 1, "one row back")?;
        let row = &rows.rows[0];
        check(matches!(row[0], DbValue::Int32(1)), "int4")?;
        check(matches!(row[1], DbValue::Int64(-7)), "int8")?;
        check(
            matches!(row[2], DbValue::Floating64(v) if v == -0.5),
            "float8",
        )?;
        check(matches!(row[3], DbValue::Boolean(false)), "bool")?;
        check(matches!(&row[4], DbValue::Str(s) if s == "pg3"), "text")?;
        check(
            matches!(&row[5], DbValue::Binary(b) if b == b"bytes"),
            "bytea",
        )?;
        check(matches!(row[6], DbValue::Date((2024, 2, 29))), "date")?;
        check(matches!(row[7], DbValue::Time((23, 59, 58, 0))), "time")?;
        check(
            matches!(row[8], DbValue::Datetime((2024, 2, 29, 12, 30, 0, 0))),
            "timestamp",
        )?;
        check(
            matches!(row[9], DbValue::Datetime((2001, 9, 9, 1, 46, 40, 0))),
            "timestamptz from a Unix timestamp",
        )?;
        check(matches!(row[10], DbValue::DbNull), "null")?;
        // A type this version has no case for.
        let uuid = db
            .query("SELECT gen_random_uuid()", &[])
            .map_err(step("select a uuid"))?;
        check(
            matches!(uuid.rows[0][0], DbValue::Unsupported)
                && matches!(uuid.columns[0].data_type, DbDataType::Other),
            "a uuid is unsupported in this version",
        )?;
        let updated = db
            .execute(
                &format!("UPDATE {table} SET label = $1 WHERE id = $2"),
                &[P::Str("updated".into()), P::Int32(1)],
            )
            .map_err(step("update"))?;
        check(updated == 1, "update affects one row")
    }
}

/// `spin:postgres/postgres@4.0.0`: adds UUIDs, JSON, numerics, ranges,
/// arrays and intervals, and server errors with their SQLSTATE.
mod v4 {
    use super::{Failure, check};
    use spin_sdk::pg4::{
        Connection, DbDataType, DbValue, Interval, ParameterValue as P, PgError, QueryError,
        RangeBoundKind,
    };

    fn error_text(error: &PgError) -> String {
        match error {
            PgError::ConnectionFailed(m) => format!("connection-failed: {m}"),
            PgError::BadParameter(m) => format!("bad-parameter: {m}"),
            PgError::QueryFailed(QueryError::Text(m)) => format!("query-failed: {m}"),
            PgError::QueryFailed(QueryError::DbError(e)) => {
                format!("query-failed: {} ({})", e.message, e.code)
            }
            PgError::ValueConversionFailed(m) => format!("value-conversion-failed: {m}"),
            PgError::Other(m) => format!("other: {m}"),
        }
    }

    fn step(what: &'static str) -> impl Fn(PgError) -> Failure {
        move |error| Failure::Failed(format!("{what}: {}", error_text(&error)))
    }

    const UUID: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";

    pub fn exercise(address: &str, table: &str) -> Result<(), Failure> {
        let db = Connection::open(address).map_err(|e| Failure::Refused(error_text(&e)))?;
        db.execute(
            &format!(
                "CREATE TABLE {table} (id int4 PRIMARY KEY, label text, u uuid, j jsonb, \
                 dec numeric, r int4range, a int8[], names text[], span interval, \
                 moment timestamp, nothing int8)"
            ),
            &[],
        )
        .map_err(step("create"))?;
        let inserted = db
            .execute(
                &format!(
                    "INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    P::Int32(1),
                    P::Str("pg4".into()),
                    P::Uuid(UUID.into()),
                    P::Jsonb(br#"{"a":[1,2]}"#.to_vec()),
                    P::Decimal("12.345".into()),
                    P::RangeInt32((
                        Some((1, RangeBoundKind::Inclusive)),
                        Some((5, RangeBoundKind::Exclusive)),
                    )),
                    P::ArrayInt64(vec![Some(1), None, Some(3)]),
                    P::ArrayStr(vec![Some("a".into()), None]),
                    P::Interval(Interval {
                        micros: 1_500_000,
                        days: 2,
                        months: 3,
                    }),
                    P::Datetime((2024, 2, 29, 12, 30, 0, 0)),
                    P::DbNull,
                ],
            )
            .map_err(step("insert"))?;
        check(inserted == 1, "insert affects one row")?;
        let rows = db
            .query(
                &format!("SELECT * FROM {table} WHERE u = $1"),
                &[P::Uuid(UUID.into())],
            )
            .map_err(step("select"))?;
        check(rows.columns.len() == 11, "eleven columns")?;
        check(
            matches!(rows.columns[2].data_type, DbDataType::Uuid)
                && matches!(rows.columns[3].data_type, DbDataType::Jsonb)
                && matches!(rows.columns[5].data_type, DbDataType::RangeInt32),
            "column types",
        )?;
        check(rows.rows.len() == 1, "one row back")?;
        let row = &rows.rows[0];
        check(matches!(row[0], DbValue::Int32(1)), "int4")?;
        check(matches!(&row[1], DbValue::Str(s) if s == "pg4"), "text")?;
        check(matches!(&row[2], DbValue::Uuid(s) if s == UUID), "uuid")?;
        check(
            matches!(&row[3], DbValue::Jsonb(b) if b == br#"{"a":[1,2]}"#),
            "jsonb",
        )?;
        check(
            matches!(&row[4], DbValue::Decimal(s) if s == "12.345"),
            "numeric",
        )?;
        check(
            matches!(
                row[5],
                DbValue::RangeInt32((
                    Some((1, RangeBoundKind::Inclusive)),
                    Some((5, RangeBoundKind::Exclusive))
                ))
            ),
            "int4range",
        )?;
        check(
            matches!(&row[6], DbValue::ArrayInt64(a) if a == &[Some(1), None, Some(3)]),
            "int8[]",
        )?;
        check(
            matches!(&row[7], DbValue::ArrayStr(a) if a == &[Some("a".to_owned()), None]),
            "text[]",
        )?;
        check(
            matches!(
                row[8],
                DbValue::Interval(Interval {
                    micros: 1_500_000,
                    days: 2,
                    months: 3
                })
            ),
            "interval",
        )?;
        check(
            matches!(row[9], DbValue::Datetime((2024, 2, 29, 12, 30, 0, 0))),
            "timestamp",
        )?;
        check(matches!(row[10], DbValue::DbNull), "null")?;
        let missing = db.query("SELECT * FROM no_such_table_here", &[]);
        check(
            matches!(&missing, Err(PgError::QueryFailed(QueryError::DbError(e))) if e.code == "42P01"),
            "a server error is query-failed with its SQLSTATE",
        )
    }
}
