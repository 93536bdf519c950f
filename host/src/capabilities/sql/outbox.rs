//! The transactional outbox: messages published inside a transaction are
//! rows of `spindle_outbox`, written by that transaction, and a relay task
//! sends them to the bus after commit.
//!
//! A row is deleted only after the bus took its message, so a crash between
//! the two sends it again on restart: delivery is at least once, in commit
//! order per database. Consumers dedupe on the `spindle-message-id` header.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::Notify;

use super::database::{Database, Transaction};
use crate::bus::{Bus, Message};

/// The header carrying each message's unique id.
pub const MESSAGE_ID_HEADER: &str = "spindle-message-id";

/// Rows sent per round before the relay looks for new ones again.
const BATCH: i64 = 100;

/// First wait after a failed send; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How often an idle relay looks anyway (rows committed by another replica).
const IDLE_SWEEP: Duration = Duration::from_secs(2);

/// Creates the outbox table if this database does not have it yet.
pub async fn create_table(database: &Database) -> Result<(), sqlx::Error> {
    let statement = match database {
        Database::Sqlite(_) => {
            "CREATE TABLE IF NOT EXISTS spindle_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                subject TEXT NOT NULL,
                body BLOB NOT NULL,
                headers TEXT NOT NULL
            )"
        }
        Database::Postgres(_) => {
            "CREATE TABLE IF NOT EXISTS spindle_outbox (
                id BIGSERIAL PRIMARY KEY,
                subject TEXT NOT NULL,
                body BYTEA NOT NULL,
                headers TEXT NOT NULL
            )"
        }
    };
    match database {
        Database::Sqlite(pool) => drop(sqlx::query(statement).execute(pool).await?),
        Database::Postgres(pool) => drop(sqlx::query(statement).execute(pool).await?),
    }
    Ok(())
}

/// Writes `message` into the outbox as part of `transaction`, with a fresh
/// message id.
pub async fn insert(
    transaction: &mut Transaction,
    mut message: Message,
) -> Result<(), sqlx::Error> {
    message.headers.push((
        MESSAGE_ID_HEADER.to_string(),
        uuid::Uuid::new_v4().to_string(),
    ));
    let headers = serde_json::to_string(&message.headers)
        .map_err(|error| sqlx::Error::Encode(error.into()))?;
    let body = message.body.to_vec();
    let statement = "INSERT INTO spindle_outbox (subject, body, headers) VALUES ($1, $2, $3)";
    match transaction {
        Transaction::Sqlite(tx) => {
            sqlx::query(statement)
                .bind(message.subject)
                .bind(body)
                .bind(headers)
                .execute(&mut **tx)
                .await?;
        }
        Transaction::Postgres(tx) => {
            sqlx::query(statement)
                .bind(message.subject)
                .bind(body)
                .bind(headers)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Wakes a database's relay after a commit.
#[derive(Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// Tells the relay there may be new rows.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Starts relaying `database`'s outbox to `bus` until the process ends.
/// Rows left by an earlier run go first.
pub fn start_relay(component: String, database: Database, bus: Bus) -> RelayWaker {
    let waker = RelayWaker::default();
    let wake = waker.0.clone();
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            match relay_batch(&database, &bus).await {
                Ok(sent) if sent > 0 => backoff = MIN_BACKOFF,
                Ok(_) => {
                    backoff = MIN_BACKOFF;
                    let _ = tokio::time::timeout(IDLE_SWEEP, wake.notified()).await;
                }
                Err(error) => {
                    tracing::warn!(%component, "outbox relay failed, retrying in {backoff:?}: {error:#}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    waker
}

/// Sends up to [`BATCH`] rows in id order; returns how many were sent.
async fn relay_batch(database: &Database, bus: &Bus) -> anyhow::Result<usize> {
    let select =
        format!("SELECT id, subject, body, headers FROM spindle_outbox ORDER BY id LIMIT {BATCH}");
    let rows: Vec<(i64, String, Vec<u8>, String)> = match database {
        Database::Sqlite(pool) => {
            decode(sqlx::query(AssertSqlSafe(select)).fetch_all(pool).await?)?
        }
        Database::Postgres(pool) => {
            decode(sqlx::query(AssertSqlSafe(select)).fetch_all(pool).await?)?
        }
    };
    let delete = "DELETE FROM spindle_outbox WHERE id = $1";
    for (id, subject, body, headers) in &rows {
        let headers: Vec<(String, String)> = serde_json::from_str(headers)?;
        let message = Message {
            subject: subject.clone(),
            body: Bytes::from(body.clone()),
            headers,
        };
        bus.publish(message).await?;
        match database {
            Database::Sqlite(pool) => drop(sqlx::query(delete).bind(id).execute(pool).await?),
            Database::Postgres(pool) => drop(sqlx::query(delete).bind(id).execute(pool).await?),
        }
    }
    Ok(rows.len())
}

fn decode<R: Row>(rows: Vec<R>) -> Result<Vec<(i64, String, Vec<u8>, String)>, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        })
        .collect()
}
