//! The transactional outbox: messages published inside a transaction are
//! rows of `spindle_outbox`, written by that transaction, and a relay task
//! sends them to the bus after commit.
//!
//! A row is deleted only after the bus took its message, so a crash between
//! the two sends it again on restart: delivery is at least once, in commit
//! order per database. Consumers dedupe on the `spindle-message-id` header.
//! The relay trusts no row: one it can never send (undecodable, a subject
//! the component may not publish to, a header the bus refuses) is moved to
//! `spindle_outbox_dead_letters` with the reason, and the rows behind it go
//! on; only a bus that does not answer holds the queue up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::database::{Database, Transaction};
use crate::bus::{self, Bus, Message};
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
    let dead_letters = format!(
        "CREATE TABLE IF NOT EXISTS spindle_outbox_dead_letters (
            id {id},
            outbox_id BIGINT NOT NULL,
            subject TEXT,
            body {body},
            headers TEXT,
            reason TEXT NOT NULL,
            moved_at_ms BIGINT NOT NULL
        )"
    );
    database.execute(&dead_letters, Vec::new()).await?;
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
        .execute_as_host(
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

/// Starts relaying `database`'s outbox to `bus` until the process ends,
/// sending only to subjects `allowed_publish` matches. Rows left by an
/// earlier run go first.
pub fn start_relay(
    component: String,
    database: Database,
    bus: Bus,
    allowed_publish: Vec<String>,
) -> RelayWaker {
    let waker = RelayWaker::default();
    let wake = waker.0.clone();
    let relay = Relay {
        component,
        database,
        bus,
        allowed_publish,
    };
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            match relay.batch().await {
                Ok(sent) if sent > 0 => backoff = MIN_BACKOFF,
                Ok(_) => {
                    backoff = MIN_BACKOFF;
                    relay.record_backlog().await;
                    let _ = tokio::time::timeout(IDLE_SWEEP, wake.notified()).await;
                }
                Err(error) => {
                    let component = &relay.component;
                    tracing::warn!(%component, "outbox relay failed, retrying in {backoff:?}: {error:#}");
                    relay.record_backlog().await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    waker
}

/// One component's relay.
struct Relay {
    component: String,
    database: Database,
    bus: Bus,
    /// Checked again for every row: the table is the host's, but a row is
    /// never taken on trust.
    allowed_publish: Vec<String>,
}

impl Relay {
    /// Sends up to [`BATCH`] rows in id order; returns how many were
    /// settled (sent, or set aside as undeliverable).
    async fn batch(&self) -> anyhow::Result<usize> {
        let select = format!(
            "SELECT id, subject, body, headers FROM spindle_outbox ORDER BY id LIMIT {BATCH}"
        );
        let rows = self.database.query(&select, Vec::new()).await?.rows;
        for row in &rows {
            let Some(Value::Integer(id)) = row.first() else {
                anyhow::bail!("spindle_outbox has a row without an integer id: {row:?}");
            };
            match self.deliverable(row) {
                Ok(message) => {
                    self.bus.publish(message).await?;
                    self.database
                        .execute(
                            "DELETE FROM spindle_outbox WHERE id = $1",
                            vec![Value::Integer(*id)],
                        )
                        .await?;
                }
                Err(reason) => self.set_aside(*id, &reason).await?,
            }
        }
        Ok(rows.len())
    }

    /// The message a row holds, or why it can never be sent.
    fn deliverable(&self, row: &[Value]) -> Result<Message, String> {
        let [
            _,
            Value::Text(subject),
            Value::Bytes(body),
            Value::Text(headers),
        ] = row
        else {
            return Err("the row's columns do not have the outbox's types".into());
        };
        let headers: Vec<(String, String)> = serde_json::from_str(headers)
            .map_err(|error| format!("the headers are not a JSON list of pairs: {error}"))?;
        super::check_publish(&self.allowed_publish, subject)?;
        bus::check_headers(&headers).map_err(|error| error.to_string())?;
        Ok(Message {
            subject: subject.clone(),
            body: Bytes::from(body.clone()),
            headers,
            reply_to: None,
        })
    }

    /// Moves row `id` to the dead-letter table with `reason`, in one
    /// transaction, and says so once.
    async fn set_aside(&self, id: i64, reason: &str) -> anyhow::Result<()> {
        let reason = bus::single_line(reason);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut transaction = self.database.begin().await?;
        transaction
            .execute(
                "INSERT INTO spindle_outbox_dead_letters \
                 (outbox_id, subject, body, headers, reason, moved_at_ms) \
                 SELECT id, subject, body, headers, $2, $3 FROM spindle_outbox WHERE id = $1",
                vec![
                    Value::Integer(id),
                    Value::Text(reason.clone()),
                    Value::Integer(now_ms),
                ],
            )
            .await?;
        transaction
            .execute(
                "DELETE FROM spindle_outbox WHERE id = $1",
                vec![Value::Integer(id)],
            )
            .await?;
        transaction.commit().await?;
        let component = &self.component;
        tracing::error!(%component, outbox_id = id, %reason, "outbox row cannot be sent; moved to spindle_outbox_dead_letters");
        metrics::metrics()
            .outbox_dead_letters
            .get_or_create(&metrics::component(component))
            .inc();
        Ok(())
    }
    /// Sets the backlog gauge: rows left (another replica's, or ones that
    /// came in since this relay's last batch).
    async fn record_backlog(&self) {
        let rows = self
            .database
            .query("SELECT COUNT(*) FROM spindle_outbox", Vec::new())
            .await;
        if let Ok(rows) = rows
            && let Some(Value::Integer(count)) = rows.rows.first().and_then(|row| row.first())
        {
            metrics::metrics()
                .outbox_backlog
                .get_or_create(&metrics::component(&self.component))
                .set(*count);
        }
    }
}
