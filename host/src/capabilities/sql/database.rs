//! The two backends of a managed database, SQLite and PostgreSQL, behind one
//! `Database` value: opening, typed parameters in, typed rows out.
//!
//! Both speak the interface's small value set (null, boolean, integer, float,
//! text, bytes, timestamp). Richer column types come back in the nearest of
//! those (numeric, uuid, json and dates as text), so a query never fails
//! because of how a column was declared.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{Stream, TryStreamExt};
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgTypeInfo, PgValueRef, Postgres,
};
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Row, Sqlite, TypeInfo, ValueRef};

use super::params;
use crate::capabilities::sqlite_guard;
use crate::platform::sql::{RowSet, Value};

/// How long a call waits for a pooled connection before the database counts
/// as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most one query's rows may take in host memory (as spin:sqlite).
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// A component's database.
#[derive(Clone, Debug)]
pub enum Database {
    /// A SQLite file under the state dir (the embedded default).
    Sqlite(SqlitePool),
    /// A PostgreSQL database named by the runtime config.
    Postgres(PgPool),
}

/// Who a pool's statements come from.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// The component: sandboxed, each statement cut off after the limit.
    Guest {
        /// How long one statement may run.
        statement_limit: Duration,
    },
    /// The host itself: migrations, the outbox relay.
    Host,
}

/// An open transaction on a [`Database`].
pub enum Transaction {
    /// On SQLite.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    /// On PostgreSQL.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Database {
    /// Opens (creating if missing) the SQLite file at `path`, for the
    /// component's statements (every connection under the guest sandbox,
    /// [`sqlite_guard`]) or for the host's own work on it (migrations, the
    /// outbox relay).
    pub async fn open_sqlite(path: &Path, access: Access) -> Result<Self, sqlx::Error> {
        let options = crate::capabilities::sqlite_file_options(path)?.foreign_keys(true);
        let pool = SqlitePoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let pool = match access {
            Access::Guest { statement_limit } => {
                pool.max_connections(4).after_connect(move |connection, _| {
                    Box::pin(sqlite_guard::install(connection, statement_limit))
                })
            }
            Access::Host => pool.max_connections(2),
        };
        Ok(Self::Sqlite(pool.connect_with(options).await?))
    }

    /// Connects to a provisioned PostgreSQL database as one of its roles.
    /// A guest's connection is reset before the next call gets it, so
    /// nothing one call sets (`search_path`, a timeout) reaches another.
    pub async fn open_postgres(
        options: PgConnectOptions,
        access: Access,
    ) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        let pool = match access {
            Access::Guest { .. } => {
                pool.after_release(crate::capabilities::postgres::reset_session)
            }
            Access::Host => pool,
        };
        Ok(Self::Postgres(pool.connect_with(options).await?))
    }

    /// `"sqlite"` or `"postgres"`: the migrations subfolder and log name.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs a statement that returns rows.
    pub async fn query(&self, statement: &str, params: Vec<Value>) -> Result<RowSet, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => sqlite_query(pool, statement, params).await,
            Self::Postgres(pool) => postgres_query(pool, statement, params).await,
        }
    }

    /// Runs a statement that changes rows; returns how many.
    pub async fn execute(&self, statement: &str, params: Vec<Value>) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => sqlite_execute(pool, statement, params, Cache::Yes).await,
            Self::Postgres(pool) => postgres_execute(pool, statement, params).await,
        }
    }

    /// Starts a transaction. SQLite takes the write lock up front, so two
    /// writers queue instead of failing when one upgrades.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(pool) => Transaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(pool) => Transaction::Postgres(pool.begin().await?),
        })
    }
}

impl Transaction {
    /// Whether this runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs a statement that returns rows, inside the transaction.
    pub async fn query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<RowSet, sqlx::Error> {
        match self {
            Self::Sqlite(tx) => sqlite_query(&mut **tx, statement, params).await,
            Self::Postgres(tx) => postgres_query(&mut **tx, statement, params).await,
        }
    }

    /// Runs a statement that changes rows, inside the transaction.
    pub async fn execute(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(tx) => sqlite_execute(&mut **tx, statement, params, Cache::Yes).await,
            Self::Postgres(tx) => postgres_execute(&mut **tx, statement, params).await,
        }
    }

    /// Runs one of the host's own statements (the outbox insert) inside the
    /// guest's transaction: outside the sandbox, and never cached, so the
    /// same text from the guest is prepared and refused afresh.
    pub async fn execute_as_host(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(tx) => {
                let _host = sqlite_guard::HostStatement::begin(tx).await?;
                sqlite_execute(&mut **tx, statement, params, Cache::No).await
            }
            Self::Postgres(tx) => postgres_execute(&mut **tx, statement, params).await,
        }
    }

    /// Makes the transaction's writes durable.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }

    /// Discards the transaction's writes.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.rollback().await,
            Self::Postgres(tx) => tx.rollback().await,
        }
    }
}

async fn sqlite_query<'c>(
    executor: impl sqlx::Executor<'c, Database = Sqlite>,
    statement: &str,
    params: Vec<Value>,
) -> Result<RowSet, sqlx::Error> {
    let statement = params::to_sqlite(statement);
    let rows =
        sqlx::query_with(AssertSqlSafe(statement), sqlite_arguments(params)?).fetch(executor);
    capped_row_set(rows, sqlite_value).await
}

/// Whether sqlx keeps a statement prepared for the next time its text
/// comes: never for the host's statements on a guest connection, which were
/// authorized as the host's.
#[derive(PartialEq)]
enum Cache {
    Yes,
    No,
}

async fn sqlite_execute<'c>(
    executor: impl sqlx::Executor<'c, Database = Sqlite>,
    statement: &str,
    params: Vec<Value>,
    cache: Cache,
) -> Result<u64, sqlx::Error> {
    let statement = params::to_sqlite(statement);
    let done = sqlx::query_with(AssertSqlSafe(statement), sqlite_arguments(params)?)
        .persistent(cache == Cache::Yes)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

async fn postgres_query<'c>(
    executor: impl sqlx::Executor<'c, Database = Postgres>,
    statement: &str,
    params: Vec<Value>,
) -> Result<RowSet, sqlx::Error> {
    let rows = sqlx::query_with(
        AssertSqlSafe(statement.to_string()),
        postgres_arguments(params)?,
    )
    .fetch(executor);
    capped_row_set(rows, postgres_value).await
}

async fn postgres_execute<'c>(
    executor: impl sqlx::Executor<'c, Database = Postgres>,
    statement: &str,
    params: Vec<Value>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query_with(
        AssertSqlSafe(statement.to_string()),
        postgres_arguments(params)?,
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Decodes rows as they arrive, and stops (dropping the rest unread) once
/// they would take more than [`MAX_RESULT_BYTES`] of host memory.
async fn capped_row_set<R: Row>(
    rows: impl Stream<Item = Result<R, sqlx::Error>>,
    cell: fn(&R, usize) -> Result<Value, sqlx::Error>,
) -> Result<RowSet, sqlx::Error> {
    let mut rows = std::pin::pin!(rows);
    let mut set = RowSet {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    let mut bytes = 0;
    while let Some(row) = rows.try_next().await? {
        if set.rows.is_empty() {
            set.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        let values: Vec<Value> = (0..row.len())
            .map(|index| cell(&row, index))
            .collect::<Result<_, _>>()?;
        bytes += values.iter().map(value_size).sum::<usize>();
        if bytes > MAX_RESULT_BYTES {
            return Err(sqlx::Error::Decode(
                format!(
                    "the query's rows exceed {} MiB, the most one query may return; \
                     select fewer rows or columns (LIMIT/OFFSET)",
                    MAX_RESULT_BYTES >> 20
                )
                .into(),
            ));
        }
        set.rows.push(values);
    }
    Ok(set)
}

/// Roughly the host memory a value takes, for the result cap.
fn value_size(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::Text(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
            _ => 0,
        }
}

fn sqlite_arguments(params: Vec<Value>) -> Result<SqliteArguments, sqlx::Error> {
    use sqlx::Arguments;
    let mut arguments = SqliteArguments::default();
    for param in params {
        match param {
            Value::Null => arguments.add(None::<i64>),
            Value::Boolean(value) => arguments.add(value),
            Value::Integer(value) => arguments.add(value),
            Value::Float(value) => arguments.add(value),
            Value::Text(value) => arguments.add(value),
            Value::Bytes(value) => arguments.add(value),
            Value::Timestamp(micros) => arguments.add(timestamp(micros)?),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

fn postgres_arguments(params: Vec<Value>) -> Result<PgArguments, sqlx::Error> {
    use sqlx::Arguments;
    let mut arguments = PgArguments::default();
    for param in params {
        match param {
            Value::Null => arguments.add(UntypedNull),
            Value::Boolean(value) => arguments.add(value),
            Value::Integer(value) => arguments.add(value),
            Value::Float(value) => arguments.add(value),
            Value::Text(value) => arguments.add(value),
            Value::Bytes(value) => arguments.add(value),
            Value::Timestamp(micros) => arguments.add(timestamp(micros)?),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

/// A NULL parameter whose type the server infers from where it is used, so
/// `INSERT INTO t (name) VALUES ($1)` accepts a null for any column type.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        // OID 0 is "unspecified" in the protocol: the server decides.
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn timestamp(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| sqlx::Error::Encode(format!("timestamp {micros} is out of range").into()))
}

fn sqlite_value(row: &SqliteRow, index: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // The declared type says what the cell means (BOOLEAN, TIMESTAMP); the
    // stored class says how it is kept (SQLite is dynamically typed).
    let declared = row.column(index).type_info().name().to_ascii_uppercase();
    let stored = raw.type_info().name().to_string();
    Ok(match (declared.as_str(), stored.as_str()) {
        ("BOOLEAN" | "BOOL", "INTEGER") => Value::Boolean(row.try_get_unchecked::<bool, _>(index)?),
        ("TIMESTAMP" | "DATETIME" | "TIMESTAMPTZ", _) => {
            let at: DateTime<Utc> = row.try_get_unchecked(index)?;
            Value::Timestamp(at.timestamp_micros())
        }
        (_, "INTEGER") => Value::Integer(row.try_get_unchecked(index)?),
        (_, "REAL") => Value::Float(row.try_get_unchecked(index)?),
        (_, "BLOB") => Value::Bytes(row.try_get_unchecked(index)?),
        _ => Value::Text(row.try_get_unchecked(index)?),
    })
}

fn postgres_value(row: &PgRow, index: usize) -> Result<Value, sqlx::Error> {
    let raw: PgValueRef<'_> = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().name().to_string();
    Ok(match kind.as_str() {
        "BOOL" => Value::Boolean(row.try_get(index)?),
        "INT2" => Value::Integer(row.try_get::<i16, _>(index)?.into()),
        "INT4" => Value::Integer(row.try_get::<i32, _>(index)?.into()),
        "INT8" => Value::Integer(row.try_get(index)?),
        "FLOAT4" => Value::Float(row.try_get::<f32, _>(index)?.into()),
        "FLOAT8" => Value::Float(row.try_get(index)?),
        "NUMERIC" => Value::Text(row.try_get::<rust_decimal::Decimal, _>(index)?.to_string()),
        "BYTEA" => Value::Bytes(row.try_get(index)?),
        "TIMESTAMPTZ" => {
            Value::Timestamp(row.try_get::<DateTime<Utc>, _>(index)?.timestamp_micros())
        }
        "TIMESTAMP" => Value::Timestamp(
            row.try_get::<NaiveDateTime, _>(index)?
                .and_utc()
                .timestamp_micros(),
        ),
        "DATE" => Value::Text(row.try_get::<chrono::NaiveDate, _>(index)?.to_string()),
        "UUID" => Value::Text(row.try_get::<uuid::Uuid, _>(index)?.to_string()),
        "JSON" | "JSONB" => Value::Text(row.try_get::<serde_json::Value, _>(index)?.to_string()),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => Value::Text(row.try_get(index)?),
        other => {
            return Err(sqlx::Error::Decode(
                format!("column {index} has type {other}, which the sql interface has no value for; cast it in the query (e.g. `::text`)").into(),
            ));
        }
    })
}

/// Parses a `postgres://` URL's database name, for log lines without secrets.
pub fn database_name(url: &str) -> String {
    PgConnectOptions::from_str(url)
        .ok()
        .and_then(|options| options.get_database().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}
