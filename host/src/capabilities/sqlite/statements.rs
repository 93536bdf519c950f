//! Opening SQLite pools and running one statement: parameters in, typed
//! rows out, counters per connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use futures::TryStreamExt;
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow, SqliteValueRef};
use sqlx::{AssertSqlSafe, Column, Decode, Executor, Row, SqlSafeStr, Sqlite, Statement};
use sqlx::{TypeInfo, ValueRef};
use tokio::sync::Mutex;

use super::bindings::spin::sqlite::sqlite::{Error, RowResult, Value};
use super::{
    ACQUIRE_TIMEOUT, Connection, MAX_CONNECTIONS, MAX_RESULT_BYTES, Session, to_guest_error,
};

/// Opens (creating if needed) the database file at `path`; each statement
/// may run for `statement_limit`.
pub(super) async fn open_pool(
    path: &Path,
    statement_limit: std::time::Duration,
) -> anyhow::Result<SqlitePool> {
    let options = crate::capabilities::sqlite_file_options(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A guest may drop its connection inside a transaction it began; the
        // next user of the pooled connection must not inherit it. ROLLBACK
        // outside a transaction fails harmlessly.
        .after_connect(move |connection, _| {
            Box::pin(crate::capabilities::sqlite_guard::install(
                connection,
                statement_limit,
            ))
        })
        .after_release(|connection, _| {
            Box::pin(async move {
                let _ = connection.execute("ROLLBACK").await;
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Takes a connection from `pool` (the outcome of the permission check)
/// for one guest `connection` to `database`.
pub(super) async fn open(
    pool: Result<SqlitePool, Error>,
    database: String,
) -> Result<Connection, Error> {
    let connection = pool?.acquire().await.map_err(to_guest_error)?;
    Ok(Connection {
        database: database.into(),
        session: Arc::new(Mutex::new(Session {
            connection,
            has_run: false,
        })),
    })
}

/// Runs `statement` with `parameters` bound in order, returning its column
/// names and every row.
pub(super) async fn execute(
    session: &Mutex<Session>,
    statement: String,
    parameters: Vec<Value>,
) -> Result<(Vec<String>, Vec<RowResult>), Error> {
    let mut session = session.lock().await;
    session.has_run = true;
    let connection = &mut *session.connection;
    // Preparing first gives the column names even when no row comes back.
    let prepared = connection
        .prepare(AssertSqlSafe(statement).into_sql_str())
        .await
        .map_err(to_guest_error)?;
    let columns = prepared
        .columns()
        .iter()
        .map(|column| column.name().to_owned())
        .collect();
    let mut query = prepared.query();
    for parameter in parameters {
        query = match parameter {
            Value::Integer(value) => query.bind(value),
            Value::Real(value) => query.bind(value),
            Value::Text(value) => query.bind(value),
            Value::Blob(value) => query.bind(value),
            Value::Null => query.bind(None::<i64>),
        };
    }
    let mut rows = query.fetch(connection);
    let mut result = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.try_next().await.map_err(to_guest_error)? {
        let values = row_values(&row)?;
        bytes += values.iter().map(value_size).sum::<usize>();
        if bytes > MAX_RESULT_BYTES {
            return Err(Error::Io(format!(
                "the query's rows exceed {} MiB",
                MAX_RESULT_BYTES >> 20
            )));
        }
        result.push(RowResult { values });
    }
    Ok((columns, result))
}

/// The row's cells as `value`s, each by its own SQLite type (SQLite types
/// values, not columns).
pub(super) fn row_values(row: &SqliteRow) -> Result<Vec<Value>, Error> {
    (0..row.len())
        .map(|index| {
            let cell = row.try_get_raw(index).map_err(to_guest_error)?;
            cell_value(cell).map_err(|error| Error::Io(format!("column {index}: {error}")))
        })
        .collect()
}

pub(super) fn cell_value(cell: SqliteValueRef<'_>) -> Result<Value, sqlx::error::BoxDynError> {
    if cell.is_null() {
        return Ok(Value::Null);
    }
    let type_name = cell.type_info().name().to_owned();
    Ok(match type_name.as_str() {
        "INTEGER" => Value::Integer(<i64 as Decode<Sqlite>>::decode(cell)?),
        "REAL" => Value::Real(<f64 as Decode<Sqlite>>::decode(cell)?),
        "TEXT" => Value::Text(<String as Decode<Sqlite>>::decode(cell)?),
        "BLOB" => Value::Blob(<Vec<u8> as Decode<Sqlite>>::decode(cell)?),
        other => return Err(format!("unexpected SQLite type {other}").into()),
    })
}

/// Roughly the host memory a value takes, for the result-size limit.
pub(super) fn value_size(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::Text(text) => text.len(),
            Value::Blob(blob) => blob.len(),
            Value::Integer(_) | Value::Real(_) | Value::Null => 0,
        }
}

/// The connection's `last_insert_rowid()` and `changes()`, or zeros if the
/// guest has not run a statement on it yet. The interface gives these
/// functions no error case, so a failure here traps.
pub(super) async fn counters(session: &Mutex<Session>) -> wasmtime::Result<(i64, u64)> {
    let mut session = session.lock().await;
    if !session.has_run {
        return Ok((0, 0));
    }
    let (rowid, changes): (i64, i64) = sqlx::query_as("SELECT last_insert_rowid(), changes()")
        .fetch_one(&mut *session.connection)
        .await
        .map_err(|error| wasmtime::format_err!("reading the connection's counters: {error}"))?;
    Ok((rowid, u64::try_from(changes).unwrap_or(0)))
}
