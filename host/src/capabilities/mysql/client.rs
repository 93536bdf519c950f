//! The backend: sqlx pools per address, the connection a guest holds, and
//! running statements on it, with values converted as Spin converts them.

use std::collections::HashMap;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow,
    MySqlStatement,
};
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::{
    Arguments, AssertSqlSafe, Column as _, Executor, Row as _, SqlSafeStr, Statement, TypeInfo,
    ValueRef,
};
use tokio::sync::{mpsc, oneshot};
use wasmtime::StoreContextMut;
use wasmtime::component::{Destination, StreamProducer, StreamResult, VecBuffer};

use super::{Column, DataType, MysqlError, Param, Value};

/// Server connections one pool may open; a guest holds one per open
/// connection, so this bounds what one address can take from the server.
const POOL_SIZE: u32 = 8;

/// How long `open` waits for a free connection (or to connect).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle server connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Distinct addresses pools are kept for; a guest cycling through addresses
/// must not grow the host without bound.
const MAX_POOLS: usize = 64;

/// Rows a streaming query decodes ahead of the guest's reads.
const ROWS_AHEAD: usize = 64;

/// The most a collected query's rows may take in host memory (as
/// `spin:postgres` and `spin:sqlite`); streamed queries hold only
/// [`ROWS_AHEAD`] rows.
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// One lazily connecting pool per address, shared by every instance.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<String, MySqlPool>>,
}

impl Pools {
    /// A connection to `address`, held until the returned handle is dropped.
    pub async fn connect(&self, address: &str) -> Result<Connection, MysqlError> {
        let pool = self.pool(address)?;
        let connection = pool.acquire().await.map_err(MysqlError::Connect)?;
        Ok(Connection(Arc::new(tokio::sync::Mutex::new(connection))))
    }

    fn pool(&self, address: &str) -> Result<MySqlPool, MysqlError> {
        // Held only for the lookup; no await happens under it.
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        if pools.len() >= MAX_POOLS {
            return Err(MysqlError::TooManyAddresses);
        }
        let options = MySqlConnectOptions::from_str(address).map_err(|error| {
            tracing::debug!(%error, "mysql address refused by the driver");
            MysqlError::InvalidAddress
        })?;
        let pool = MySqlPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .after_release(end_transaction)
            .connect_lazy_with(options);
        pools.insert(address.to_owned(), pool.clone());
        Ok(pool)
    }
}

/// Ends whatever transaction the guest left open and restores autocommit,
/// so the next guest to take the connection does not run inside it.
fn end_transaction(
    connection: &mut MySqlConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        connection.execute("ROLLBACK").await?;
        connection.execute("SET autocommit = 1").await?;
        Ok(true)
    })
}

/// The server connection behind one guest `connection` resource. Clones
/// share it; a streaming query holds it until its last row is read.
#[derive(Clone)]
pub struct Connection(Arc<tokio::sync::Mutex<PoolConnection<sqlx::MySql>>>);

/// What a streaming query hands the guest before the rows arrive: the
/// columns, the rows, and the outcome once the rows are done.
pub type StreamingQuery<R> = (
    Vec<Column>,
    RowProducer<R>,
    oneshot::Receiver<Result<(), MysqlError>>,
);

impl Connection {
    /// Runs `statement` (insert, update, delete, DDL).
    pub async fn execute(&self, statement: String, params: Vec<Param>) -> Result<(), MysqlError> {
        let arguments = bind(params)?;
        let mut connection = self.0.lock().await;
        sqlx::query_with(AssertSqlSafe(statement), arguments)
            .execute(&mut **connection)
            .await
            .map_err(MysqlError::Query)?;
        Ok(())
    }

    /// Runs `statement` and collects every row, up to [`MAX_RESULT_BYTES`].
    pub async fn query(
        &self,
        statement: String,
        params: Vec<Param>,
    ) -> Result<(Vec<Column>, Vec<Vec<Value>>), MysqlError> {
        let arguments = bind(params)?;
        let mut connection = self.0.lock().await;
        let prepared = prepare(&mut connection, statement).await?;
        let columns = columns(&prepared);
        let mut stream = prepared.query_with(arguments).fetch(&mut **connection);
        let (mut rows, mut bytes) = (Vec::new(), 0);
        while let Some(row) = stream.try_next().await.map_err(MysqlError::Query)? {
            let row = decode_row(&row, &columns)?;
            bytes +=
                std::mem::size_of_val(row.as_slice()) + row.iter().map(heap_size).sum::<usize>();
            if bytes > MAX_RESULT_BYTES {
                return Err(MysqlError::TooLarge);
            }
            rows.push(row);
        }
        Ok((columns, rows))
    }

    /// Prepares `statement` (so its columns are known even if no row comes)
    /// and streams its rows, each made into `R` by `convert`, from a task
    /// that holds the connection until the last row is read or the guest
    /// drops the stream.
    pub async fn query_streaming<R: Send + 'static>(
        &self,
        statement: String,
        params: Vec<Param>,
        convert: fn(Vec<Value>) -> R,
    ) -> Result<StreamingQuery<R>, MysqlError> {
        let arguments = bind(params)?;
        let mut connection = self.0.clone().lock_owned().await;
        let prepared = prepare(&mut connection, statement).await?;
        let columns = columns(&prepared);
        let (row_sender, row_receiver) = mpsc::channel(ROWS_AHEAD);
        let (done_sender, done_receiver) = oneshot::channel();
        let decode_columns = columns.clone();
        tokio::spawn(async move {
            let outcome = async {
                let mut rows = prepared.query_with(arguments).fetch(&mut **connection);
                while let Some(row) = rows.try_next().await.map_err(MysqlError::Query)? {
                    let row = convert(decode_row(&row, &decode_columns)?);
                    if row_sender.send(row).await.is_err() {
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

async fn prepare(
    connection: &mut MySqlConnection,
    statement: String,
) -> Result<MySqlStatement, MysqlError> {
    connection
        .prepare(AssertSqlSafe(statement).into_sql_str())
        .await
        .map_err(MysqlError::Query)
}

/// The guest's parameters as the statement's arguments, in order.
fn bind(params: Vec<Param>) -> Result<MySqlArguments, MysqlError> {
    let mut arguments = MySqlArguments::default();
    for param in params {
        let added = match param {
            Param::Boolean(value) => arguments.add(value),
            Param::Int8(value) => arguments.add(value),
            Param::Int16(value) => arguments.add(value),
            Param::Int32(value) => arguments.add(value),
            Param::Int64(value) => arguments.add(value),
            Param::Uint8(value) => arguments.add(value),
            Param::Uint16(value) => arguments.add(value),
            Param::Uint32(value) => arguments.add(value),
            Param::Uint64(value) => arguments.add(value),
            Param::Floating32(value) => arguments.add(value),
            Param::Floating64(value) => arguments.add(value),
            Param::Str(value) => arguments.add(value),
            Param::Binary(value) => arguments.add(value),
            Param::Null => arguments.add(None::<String>),
        };
        // Encoding these types into a buffer cannot fail; should a future
        // sqlx disagree, the guest hears of it rather than the host trapping.
        added.map_err(|error| MysqlError::Query(sqlx::Error::Encode(error)))?;
    }
    Ok(arguments)
}

fn columns(statement: &MySqlStatement) -> Vec<Column> {
    statement
        .columns()
        .iter()
        .map(|column| Column {
            name: column.name().to_owned(),
            data_type: data_type(column.type_info().name()),
        })
        .collect()
}

/// Spin's mapping, from the names sqlx gives MySQL's column types: by width
/// and sign for integers (`BOOLEAN` is sqlx's name for `TINYINT(1)`, which
/// Spin reads as `int8`), by collation for strings and blobs.
fn data_type(name: &str) -> DataType {
    match name {
        "BOOLEAN" | "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INT" | "MEDIUMINT" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "TINYINT UNSIGNED" => DataType::Uint8,
        "SMALLINT UNSIGNED" => DataType::Uint16,
        "INT UNSIGNED" | "MEDIUMINT UNSIGNED" => DataType::Uint32,
        "BIGINT UNSIGNED" => DataType::Uint64,
        "FLOAT" => DataType::Floating32,
        "DOUBLE" => DataType::Floating64,
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" => DataType::Str,
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            DataType::Binary
        }
        _ => DataType::Other,
    }
}

fn decode_row(row: &MySqlRow, columns: &[Column]) -> Result<Vec<Value>, MysqlError> {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| decode_value(row, index, column))
        .collect()
}

fn decode_value(row: &MySqlRow, index: usize, column: &Column) -> Result<Value, MysqlError> {
    let fail = |reason: String| MysqlError::Conversion {
        index,
        name: column.name.clone(),
        reason,
    };
    let raw = row
        .try_get_raw(index)
        .map_err(|error| fail(error.to_string()))?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // The column's type was checked above; the value is read as that type.
    fn get<'r, T: sqlx::Decode<'r, sqlx::MySql>>(
        row: &'r MySqlRow,
        index: usize,
    ) -> Result<T, String> {
        row.try_get_unchecked(index)
            .map_err(|error| error.to_string())
    }
    let value = match column.data_type {
        DataType::Int8 => get(row, index).map(Value::Int8),
        DataType::Int16 => get(row, index).map(Value::Int16),
        DataType::Int32 => get(row, index).map(Value::Int32),
        DataType::Int64 => get(row, index).map(Value::Int64),
        DataType::Uint8 => get(row, index).map(Value::Uint8),
        DataType::Uint16 => get(row, index).map(Value::Uint16),
        DataType::Uint32 => get(row, index).map(Value::Uint32),
        DataType::Uint64 => get(row, index).map(Value::Uint64),
        DataType::Floating32 => get(row, index).map(Value::Floating32),
        DataType::Floating64 => get(row, index).map(Value::Floating64),
        DataType::Str => get(row, index).map(Value::Str),
        DataType::Binary => get(row, index).map(Value::Binary),
        DataType::Other => Err(format!(
            "values of type {} cannot be read through this interface; CAST the column in the query",
            row.column(index).type_info().name()
        )),
    };
    value.map_err(fail)
}

/// What a value holds outside its own slot.
fn heap_size(value: &Value) -> usize {
    match value {
        Value::Str(text) => text.len(),
        Value::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

/// The rows of a streaming query, handed to the guest as a `stream<row>`.
pub struct RowProducer<R> {
    rows: mpsc::Receiver<R>,
}

impl<D, R: Send + Sync + 'static> StreamProducer<D> for RowProducer<R> {
    type Item = R;
    type Buffer = VecBuffer<R>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, R, VecBuffer<R>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_map_as_in_spin() {
        assert_eq!(data_type("BOOLEAN"), DataType::Int8);
        assert_eq!(data_type("MEDIUMINT UNSIGNED"), DataType::Uint32);
        assert_eq!(data_type("TEXT"), DataType::Str);
        assert_eq!(data_type("VARBINARY"), DataType::Binary);
        assert_eq!(data_type("DATETIME"), DataType::Other);
        assert_eq!(data_type("DECIMAL"), DataType::Other);
    }
}
