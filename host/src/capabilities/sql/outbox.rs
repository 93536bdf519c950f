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
use tokio::sync::Notify;

use super::database::{Database, Transaction};
use crate::bus::{Bus, Message};
use crate::metrics;
use crate::platform::sql::Value;

/// Rows sent per round before the relay looks for new ones again.
const BATCH: i64 = 100;

/// First wait after a failed send; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How often an idle relay looks anyway (rows committed by another replica).
const IDLE_SWEEP: Duration = Duration::from_secs(2);

/// Creates the outbox table if this database does not have it yet.
pub async fn create_table(database: &Database) -> Result<(), sqlx::Error> {
    let (id, body) = match database {
        Database::Sqlite(_) => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        Database::Postgres(_) => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    let statement = format!(
        "CREATE TABLE IF NOT EXISTS spindle_outbox (
            id {id},
            subject TEXT NOT NULL,
            body {body} NOT NULL,
            headers TEXT NOT NULL
        )"
    );
    database.execute(&statement, Vec::new()).await?;
    Ok(())
}

/// Writes `message` into the outbox as part of `transaction`, with a fresh
/// message id.
pub async fn insert(
    transaction: &mut Transaction,
    mut message: Message,
) -> Result<(), sqlx::Error> {
    message.ensure_message_id();
    let headers = serde_json::to_string(&message.headers)
        .map_err(|error| sqlx::Error::Encode(error.into()))?;
    let params = vec![
        Value::Text(message.subject),
        Value::Bytes(message.body.to_vec()),
        Value::Text(headers),
    ];
    transaction
        .execute(
            "INSERT INTO spindle_outbox (subject, body, headers) VALUES ($1, $2, $3)",
            params,
        )
        .await?;
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
                    record_backlog(&component, &database).await;
                    let _ = tokio::time::timeout(IDLE_SWEEP, wake.notified()).await;
                }
                Err(error) => {
                    tracing::warn!(%component, "outbox relay failed, retrying in {backoff:?}: {error:#}");
                    record_backlog(&component, &database).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    waker
}

/// Sets the backlog gauge: rows left (another replica's, or ones that came
/// in since this relay's last batch).
async fn record_backlog(component: &str, database: &Database) {
    let rows = database
        .query("SELECT COUNT(*) FROM spindle_outbox", Vec::new())
        .await;
    if let Ok(rows) = rows
        && let Some(Value::Integer(count)) = rows.rows.first().and_then(|row| row.first())
    {
        metrics::metrics()
            .outbox_backlog
            .get_or_create(&metrics::component(component))
            .set(*count);
    }
}

/// Sends up to [`BATCH`] rows in id order; returns how many were sent.
async fn relay_batch(database: &Database, bus: &Bus) -> anyhow::Result<usize> {
    let select =
        format!("SELECT id, subject, body, headers FROM spindle_outbox ORDER BY id LIMIT {BATCH}");
    let rows = database.query(&select, Vec::new()).await?.rows;
    for row in &rows {
        let (id, message) = outbox_message(row)?;
        bus.publish(message).await?;
        database
            .execute(
                "DELETE FROM spindle_outbox WHERE id = $1",
                vec![Value::Integer(id)],
            )
            .await?;
    }
    Ok(rows.len())
}

/// One outbox row as its id and the message it holds.
fn outbox_message(row: &[Value]) -> anyhow::Result<(i64, Message)> {
    let [
        Value::Integer(id),
        Value::Text(subject),
        Value::Bytes(body),
        Value::Text(headers),
    ] = row
    else {
        anyhow::bail!("spindle_outbox has an unexpected row shape: {row:?}");
    };
    let message = Message {
        subject: subject.clone(),
        body: Bytes::from(body.clone()),
        headers: serde_json::from_str(headers)?,
        reply_to: None,
    };
    Ok((*id, message))
}
