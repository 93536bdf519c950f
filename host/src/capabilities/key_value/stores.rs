//! The key-value backends: a SQLite table in Spin's layout, and Redis.

use std::path::Path;

use anyhow::Context as _;
use futures::TryStreamExt;
use futures::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use tokio::sync::mpsc;

use super::{BackendError, REDIS_TIMEOUT};

/// A key-value backend serving one label.
///
/// Futures are boxed so that stores of different kinds sit behind one
/// `dyn Store`.
pub(super) trait Store: Send + Sync {
    /// The value of `key`, `None` if it is absent.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>>;

    /// Sets `key` to `value`, replacing any previous value.
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Removes `key`; removing an absent key succeeds.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Whether `key` has a value.
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Adds `delta` to the counter at `key` in one step and returns the new
    /// count. A counter is kept as decimal text, as Redis keeps it; an
    /// absent key counts from 0.
    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<i64, BackendError>>;

    /// Sets `key` to `value` in one step if it still holds `expected`
    /// (`None`: if it is absent); whether it did.
    fn swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Sends every key into `keys` as the backend yields them, stopping early
    /// when the receiver goes away. The future owns what it uses, so that it
    /// can run as a task of its own.
    fn get_keys(&self, keys: mpsc::Sender<String>) -> BoxFuture<'static, Result<(), BackendError>>;

    /// Succeeds when the backend answers (readiness).
    fn ping(&self) -> BoxFuture<'static, Result<(), BackendError>>;
}

/// The table Spin keeps key-value data in; one file may hold many labels.
pub(super) const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)";

/// Opens (creating if needed) the SQLite file at `path` with Spin's table.
pub(super) async fn open_sqlite(path: &Path) -> anyhow::Result<SqlitePool> {
    let options = crate::capabilities::sqlite_file_options(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let pool = SqlitePoolOptions::new().connect_with(options).await?;
    sqlx::query(SQLITE_SCHEMA).execute(&pool).await?;
    Ok(pool)
}

/// One label's keys in an SQLite file.
pub(super) struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// The label, the value of the `store` column.
    pub(super) name: String,
}

impl Store for SqliteStore {
    fn ping(&self) -> BoxFuture<'static, Result<(), BackendError>> {
        let pool = self.pool.clone();
        async move {
            sqlx::query("SELECT 1").execute(&pool).await?;
            Ok(())
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        async move {
            let value = sqlx::query_scalar(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
            )
            .bind(&self.name)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            Ok(value)
        }
        .boxed()
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            sqlx::query(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            )
            .bind(&self.name)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            sqlx::query("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")
                .bind(&self.name)
                .bind(key)
                .execute(&self.pool)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        async move {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")
                    .bind(&self.name)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(found.is_some())
        }
        .boxed()
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<i64, BackendError>> {
        async move {
            // One statement: SQLite runs it under the write lock, so
            // concurrent increments never lose one another's.
            let count = sqlx::query_scalar(
                "INSERT INTO spin_key_value (store, key, value)
                 VALUES (?1, ?2, CAST(CAST(?3 AS TEXT) AS BLOB))
                 ON CONFLICT (store, key) DO UPDATE SET value =
                     CAST(CAST(CAST(CAST(value AS TEXT) AS INTEGER) + ?3 AS TEXT) AS BLOB)
                 RETURNING CAST(CAST(value AS TEXT) AS INTEGER)",
            )
            .bind(&self.name)
            .bind(key)
            .bind(delta)
            .fetch_one(&self.pool)
            .await?;
            Ok(count)
        }
        .boxed()
    }

    fn swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        async move {
            let done = match expected {
                None => {
                    sqlx::query(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (store, key) DO NOTHING",
                    )
                    .bind(&self.name)
                    .bind(key)
                    .bind(value)
                    .execute(&self.pool)
                    .await?
                }
                Some(expected) => {
                    sqlx::query(
                        "UPDATE spin_key_value SET value = ?3
                     WHERE store = ?1 AND key = ?2 AND value = ?4",
                    )
                    .bind(&self.name)
                    .bind(key)
                    .bind(value)
                    .bind(expected)
                    .execute(&self.pool)
                    .await?
                }
            };
            Ok(done.rows_affected() == 1)
        }
        .boxed()
    }

    fn get_keys(&self, keys: mpsc::Sender<String>) -> BoxFuture<'static, Result<(), BackendError>> {
        let pool = self.pool.clone();
        let name = self.name.clone();
        async move {
            let mut rows = sqlx::query_scalar("SELECT key FROM spin_key_value WHERE store = ?1")
                .bind(&name)
                .fetch(&pool);
            while let Some(key) = rows.try_next().await? {
                if keys.send(key).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// Sets KEYS[1] to ARGV[3] if it holds ARGV[2] (ARGV[1] = "1") or is
/// absent (ARGV[1] = "0"); answers 1 if it did.
const SWAP_SCRIPT: &str = "local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and current == false) or (ARGV[1] == '1' and current == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0";

/// A label served by a Redis server: its keys are the server's keys, as in
/// Spin, so two labels on one server see the same data.
pub(super) struct RedisStore {
    /// Reconnects by itself; cloning shares the one multiplexed connection.
    pub(super) connection: ConnectionManager,
}

impl RedisStore {
    pub(super) async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self { connection })
    }
}

impl Store for RedisStore {
    fn ping(&self) -> BoxFuture<'static, Result<(), BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            let _: String = redis::cmd("PING").query_async(&mut connection).await?;
            Ok(())
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            Ok(redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await?)
        }
        .boxed()
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            let () = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async(&mut connection)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            let _removed: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut connection)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            Ok(redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut connection)
                .await?)
        }
        .boxed()
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
    ) -> BoxFuture<'a, Result<i64, BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            Ok(redis::cmd("INCRBY")
                .arg(key)
                .arg(delta)
                .query_async(&mut connection)
                .await?)
        }
        .boxed()
    }

    fn swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            // A script runs alone on the server: the compare and the set
            // are one step.
            let swapped: i64 = redis::cmd("EVAL")
                .arg(SWAP_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(expected.unwrap_or_default())
                .arg(value)
                .query_async(&mut connection)
                .await?;
            Ok(swapped == 1)
        }
        .boxed()
    }

    fn get_keys(&self, keys: mpsc::Sender<String>) -> BoxFuture<'static, Result<(), BackendError>> {
        let mut connection = self.connection.clone();
        async move {
            // SCAN pages through the keyspace without blocking the server;
            // a key may come twice if the server rehashes meanwhile.
            let mut scan = redis::cmd("SCAN")
                .cursor_arg(0)
                .clone()
                .iter_async::<String>(&mut connection)
                .await?;
            while let Some(key) = scan.next_item().await {
                if keys.send(key?).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        .boxed()
    }
}
