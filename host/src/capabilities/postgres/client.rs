//! The backend: sqlx pools per address, the connection a guest holds, and
//! running statements on it.
//!
//! Statements are prepared with the guest's parameter types declared, and
//! sqlx caches prepared statements by their text alone. Binding values to a
//! statement prepared for other types would have the server read their bytes
//! as the wrong type, so a cached statement is checked against the types at
//! hand and the cache cleared when they differ.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::postgres::{
    PgConnection, PgDatabaseError, PgPool, PgPoolOptions, PgSeverity, PgStatement,
};
use sqlx::{
    AssertSqlSafe, Column as _, Connection as _, Either, Executor, Row as _, SqlSafeStr, Statement,
};
use tokio::sync::{mpsc, oneshot};
use wasmtime::StoreContextMut;
use wasmtime::component::{Destination, StreamProducer, StreamResult, VecBuffer};

use super::model::{Column, DbError, ParameterValue, Row, RowSet};
use super::types::{self, Parameters};
use super::{Address, PgError};

/// Server connections one pool may open; a guest holds one per open
/// connection, so this bounds what one address can take from the server.
const POOL_SIZE: u32 = 8;

/// How long `open` waits for a free connection (or to connect).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle server connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Distinct addresses (with credentials) pools are kept for; a guest cycling
/// through addresses must not grow the host without bound.
const MAX_POOLS: usize = 64;

/// Rows a streaming query decodes ahead of the guest's reads.
const ROWS_AHEAD: usize = 64;

/// The most a collected query's rows may take in host memory (as
/// spin:sqlite); streamed queries hold only [`ROWS_AHEAD`] rows.
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// Undoes what a guest may have changed in its session, so the next guest
/// finds the connection as new (prepared statements stay: they are sqlx's
/// cache, keyed by text and checked by type). It starts by asking whether
/// the guest left a transaction open: the two timestamps are equal only in
/// the first statement of a transaction, and one simple query (this string
/// is one) is one implicit transaction unless the guest began its own. The
/// reset then runs either way, one round trip instead of two; a connection
/// found inside a guest's transaction is closed, which rolls it back.
const CHECK_AND_RESET_SESSION: &str = "SELECT transaction_timestamp() = statement_timestamp(); \
     CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// One lazily connecting pool per address, shared by every instance.
pub struct Pools {
    pools: Mutex<HashMap<Address, PgPool>>,
    /// The server's `statement_timeout` on every connection (reset with the
    /// rest of the session when a guest lets go of it).
    statement_limit: Duration,
}

impl Pools {
    /// No pools yet; statements will stop after `statement_limit`.
    pub fn new(statement_limit: Duration) -> Self {
        Self {
            pools: Mutex::default(),
            statement_limit,
        }
    }

    /// A connection to `address`, held until the returned handle is dropped.
    pub async fn connect(&self, address: &Address) -> Result<Connection, PgError> {
        let pool = self.pool(address)?;
        let connection = pool.acquire().await.map_err(PgError::Connect)?;
        Ok(Connection(Arc::new(tokio::sync::Mutex::new(connection))))
    }

    fn pool(&self, address: &Address) -> Result<PgPool, PgError> {
        // Held only for the lookup; no await happens under it.
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        if pools.len() >= MAX_POOLS {
            return Err(PgError::TooManyAddresses);
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .after_release(reset_session)
            .connect_lazy_with(address.connect_options().options([(
                "statement_timeout",
                self.statement_limit.as_millis().max(1).to_string(),
            )]));
        pools.insert(address.clone(), pool.clone());
        Ok(pool)
    }
}

/// Decides whether a released connection goes back to the pool: not if the
/// guest left a transaction open (the next guest would run inside it), and
/// only after its session settings are reset. For a pool's `after_release`;
/// the managed `sql` databases use it too.
pub(crate) fn reset_session(
    connection: &mut PgConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        // A plain string runs as a simple query: with the extended protocol
        // the timestamps differ even outside a transaction. In a failed
        // transaction this errors, which closes the connection too.
        let rows = connection.fetch_all(CHECK_AND_RESET_SESSION).await?;
        let outside_transaction: bool = rows
            .first()
            .ok_or_else(|| sqlx::Error::Protocol("the session check returned no row".into()))?
            .try_get(0)?;
        Ok(outside_transaction)
    })
}

/// The server connection behind one guest `connection` resource. Clones
/// share it; a streaming query holds it until its last row is read.
#[derive(Clone)]
pub struct Connection(Arc<tokio::sync::Mutex<PoolConnection<sqlx::Postgres>>>);

/// What `query-async` hands the guest before the rows arrive.
pub type StreamingQuery = (
    Vec<Column>,
    RowProducer,
    oneshot::Receiver<Result<(), PgError>>,
);

impl Connection {
    /// Runs `statement`, returning the number of rows it affected.
    pub async fn execute(
        &self,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<u64, PgError> {
        let Parameters { arguments, types } = Parameters::bind(params)?;
        let mut connection = self.0.lock().await;
        let prepared = prepare(&mut connection, statement, &types).await?;
        let done = prepared
            .query_with(arguments)
            .execute(&mut **connection)
            .await
            .map_err(PgError::Query)?;
        Ok(done.rows_affected())
    }

    /// Runs `statement` and collects every row.
    pub async fn query(
        &self,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, PgError> {
        let Parameters { arguments, types } = Parameters::bind(params)?;
        let mut connection = self.0.lock().await;
        let prepared = prepare(&mut connection, statement, &types).await?;
        let mut stream = prepared.query_with(arguments).fetch(&mut **connection);
        let (mut rows, mut bytes) = (Vec::new(), 0);
        while let Some(row) = stream.try_next().await.map_err(PgError::Query)? {
            // What the server sent for the row: about what its decoded
            // values take.
            bytes += (0..row.len())
                .filter_map(|index| {
                    row.try_get_raw(index)
                        .ok()?
                        .as_bytes()
                        .ok()
                        .map(<[u8]>::len)
                })
                .sum::<usize>()
                + std::mem::size_of::<Row>();
            if bytes > MAX_RESULT_BYTES {
                return Err(PgError::TooLarge);
            }
            rows.push(types::decode_row(&row)?);
        }
        drop(stream);
        Ok(RowSet {
            columns: columns(&prepared),
            rows,
        })
    }

    /// Prepares `statement` (so its columns are known even if no row comes)
    /// and streams its rows from a task that owns the connection until the
    /// last row is read or the guest drops the stream. The outcome of the
    /// whole query arrives on the receiver once the rows are done.
    pub async fn query_streaming(
        &self,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<StreamingQuery, PgError> {
        let Parameters { arguments, types } = Parameters::bind(params)?;
        let mut connection = self.0.clone().lock_owned().await;
        let prepared = prepare(&mut connection, statement, &types).await?;
        let columns = columns(&prepared);
        let (row_sender, row_receiver) = mpsc::channel(ROWS_AHEAD);
        let (done_sender, done_receiver) = oneshot::channel();
        tokio::spawn(async move {
            let outcome = async {
                let mut rows = prepared.query_with(arguments).fetch(&mut **connection);
                while let Some(row) = rows.try_next().await.map_err(PgError::Query)? {
                    if row_sender.send(types::decode_row(&row)?).await.is_err() {
                        // The guest dropped the stream: it wants no more rows.
                        break;
                    }
                }
                Ok(())
            }
            .await;
            let _ = done_sender.send(outcome);
        });
        Ok((columns, RowProducer { rows: row_receiver }, done_receiver))
    }
}

/// Prepares `statement` for parameters of `types`, replacing a cached
/// preparation of the same text for other types.
async fn prepare(
    connection: &mut PgConnection,
    statement: String,
    types: &[sqlx::postgres::PgTypeInfo],
) -> Result<PgStatement, PgError> {
    let sql = AssertSqlSafe(statement).into_sql_str();
    let prepared = connection
        .prepare_with(sql.clone(), types)
        .await
        .map_err(PgError::Query)?;
    let fits = match prepared.parameters() {
        Some(Either::Left(prepared_types)) => types::parameters_fit(prepared_types, types),
        _ => false,
    };
    if fits {
        return Ok(prepared);
    }
    connection
        .clear_cached_statements()
        .await
        .map_err(PgError::Query)?;
    connection
        .prepare_with(sql, types)
        .await
        .map_err(PgError::Query)
}

fn columns(statement: &PgStatement) -> Vec<Column> {
    statement
        .columns()
        .iter()
        .map(|column| Column {
            name: column.name().to_owned(),
            data_type: types::data_type(column.type_info()),
        })
        .collect()
}

/// The rows of a streaming query, handed to the guest as a `stream<row>`.
pub struct RowProducer {
    rows: mpsc::Receiver<Row>,
}

impl<D> StreamProducer<D> for RowProducer {
    type Item = Row;
    type Buffer = VecBuffer<Row>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, Row, VecBuffer<Row>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let capacity = destination.remaining(&mut store).unwrap_or(ROWS_AHEAD);
        if capacity == 0 {
            // A readiness probe: report ready, the next read will wait if needed.
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        let rows = &mut self.get_mut().rows;
        match rows.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < capacity {
                    match rows.try_recv() {
                        Ok(row) => batch.push(row),
                        Err(_) => break,
                    }
                }
                destination.set_buffer(batch.into());
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(None) => Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A server error with everything PostgreSQL said about it.
pub fn db_error(error: &PgDatabaseError) -> DbError {
    let severity = match error.severity() {
        PgSeverity::Panic => "PANIC",
        PgSeverity::Fatal => "FATAL",
        PgSeverity::Error => "ERROR",
        PgSeverity::Warning => "WARNING",
        PgSeverity::Notice => "NOTICE",
        PgSeverity::Debug => "DEBUG",
        PgSeverity::Info => "INFO",
        PgSeverity::Log => "LOG",
    };
    let mut as_text = format!("{severity}: {}", error.message());
    if let Some(detail) = error.detail() {
        as_text.push_str("\nDETAIL: ");
        as_text.push_str(detail);
    }
    let extras = [
        ("hint", error.hint()),
        ("where", error.r#where()),
        ("schema", error.schema()),
        ("table", error.table()),
        ("column", error.column()),
        ("datatype", error.data_type()),
        ("constraint", error.constraint()),
        ("routine", error.routine()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned())))
    .collect();
    DbError {
        as_text,
        severity: severity.to_owned(),
        code: error.code().to_owned(),
        message: error.message().to_owned(),
        detail: error.detail().map(str::to_owned),
        extras,
    }
}
