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
//!
//! The tables are the host's. On SQLite they sit beside the component's and
//! the sandbox hides them; on PostgreSQL they are in the host's schema,
//! where the component's role may insert into the outbox (the host's insert
//! runs in the component's transaction) but not read, change or delete. Replicas
//! sharing a PostgreSQL database claim rows with `FOR UPDATE SKIP LOCKED`,
//! so each row is sent by one relay.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::database::{Database, Transaction};
use super::provision::HOST_SCHEMA;
use crate::bus::{self, Bus, Message, PublishError};
use crate::metrics;
use crate::platform::sql::Value;

/// Rows sent per round before the relay looks for new ones again.
const BATCH: i64 = 100;

/// First wait after a failed send; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How often an idle relay looks anyway (rows committed by another replica).
const IDLE_SWEEP: Duration = Duration::from_secs(2);

/// The host's two tables in one backend.
struct Tables {
    outbox: String,
    dead_letters: String,
}

impl Tables {
    fn of(postgres: bool) -> Self {
        let schema = if postgres {
            format!("{HOST_SCHEMA}.")
        } else {
            String::new()
        };
        Self {
            outbox: format!("{schema}spindle_outbox"),
            dead_letters: format!("{schema}spindle_outbox_dead_letters"),
        }
    }
}

/// Creates the outbox table if this database does not have it yet.
pub async fn create_table(database: &Database) -> Result<(), sqlx::Error> {
    let (id, body) = match database {
        Database::Sqlite(_) => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        Database::Postgres(_) => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    let Tables {
        outbox,
        dead_letters,
    } = Tables::of(database.is_postgres());
    let statement = format!(
        "CREATE TABLE IF NOT EXISTS {outbox} (
            id {id},
            subject TEXT NOT NULL,
            body {body} NOT NULL,
            headers TEXT NOT NULL
        )"
    );
    database.execute(&statement, Vec::new()).await?;
    let dead_letters = format!(
        "CREATE TABLE IF NOT EXISTS {dead_letters} (
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
    let outbox = Tables::of(transaction.is_postgres()).outbox;
    transaction
        .execute_as_host(
            &format!("INSERT INTO {outbox} (subject, body, headers) VALUES ($1, $2, $3)"),
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
        tables: Tables::of(database.is_postgres()),
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

/// What became of one row's message.
enum Sent {
    /// The bus took it: the row can go.
    Published(i64),
    /// It can never be sent, for this reason: the row is set aside.
    Undeliverable(i64, String),
}

/// One component's relay.
struct Relay {
    component: String,
    database: Database,
    bus: Bus,
    /// Checked again for every row: the table is the host's, but a row is
    /// never taken on trust.
    allowed_publish: Vec<String>,
    tables: Tables,
}

impl Relay {
    /// Sends up to [`BATCH`] rows in id order, in one transaction that
    /// claims them on PostgreSQL (rows another replica holds are skipped);
    /// returns how many were settled (sent, or set aside as undeliverable).
    ///
    /// The batch's messages go out together and their acknowledgements are
    /// awaited together: one connection keeps them in order, and a batch
    /// costs about one round trip to the bus instead of one per row. Rows
    /// are settled in id order up to the first that could not be sent;
    /// that one and the rest stay, to be sent again (consumers dedupe).
    async fn batch(&self) -> anyhow::Result<usize> {
        let outbox = &self.tables.outbox;
        let claim = if self.database.is_postgres() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let select = format!(
            "SELECT id, subject, body, headers FROM {outbox} ORDER BY id LIMIT {BATCH}{claim}"
        );
        let mut session = Session::begin(&self.database).await?;
        let rows = session.query(&select).await?.rows;
        let sent = futures::future::join_all(rows.iter().map(|row| self.send(row))).await;
        let mut published = Vec::new();
        let mut outcome = Ok(());
        for sent in sent {
            match sent {
                Ok(Sent::Published(id)) => published.push(id),
                Ok(Sent::Undeliverable(id, reason)) => {
                    outcome = self.set_aside(&mut session, id, &reason).await;
                }
                Err(error) => outcome = Err(error),
            }
            if outcome.is_err() {
                break;
            }
        }
        let settled = published.len();
        let deleted = self.delete(&mut session, &published).await;
        session.finish().await?;
        deleted?;
        outcome.map(|()| settled)
    }

    /// Sends one row's message, or says why it can never be sent.
    async fn send(&self, row: &[Value]) -> anyhow::Result<Sent> {
        let Some(Value::Integer(id)) = row.first() else {
            anyhow::bail!("the outbox has a row without an integer id: {row:?}");
        };
        let message = match self.deliverable(row) {
            Ok(message) => message,
            Err(reason) => return Ok(Sent::Undeliverable(*id, reason)),
        };
        match self.bus.publish(message).await {
            Ok(()) => Ok(Sent::Published(*id)),
            Err(too_large @ PublishError::TooLarge { .. }) => {
                Ok(Sent::Undeliverable(*id, too_large.to_string()))
            }
            Err(unavailable) => Err(unavailable.into()),
        }
    }

    /// Deletes the rows whose messages the bus took, in one statement.
    async fn delete(&self, session: &mut Session<'_>, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let statement = format!(
            "DELETE FROM {} WHERE id IN ({})",
            self.tables.outbox,
            placeholders.join(", ")
        );
        let ids = ids.iter().map(|id| Value::Integer(*id)).collect();
        session.execute(&statement, ids).await?;
        Ok(())
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

    /// Moves row `id` to the dead-letter table with `reason`, and says so
    /// once.
    async fn set_aside(
        &self,
        session: &mut Session<'_>,
        id: i64,
        reason: &str,
    ) -> anyhow::Result<()> {
        let Tables {
            outbox,
            dead_letters,
        } = &self.tables;
        let reason = bus::single_line(reason);
        let now_ms = chrono::Utc::now().timestamp_millis();
        session
            .execute(
                &format!(
                    "INSERT INTO {dead_letters} \
                     (outbox_id, subject, body, headers, reason, moved_at_ms) \
                     SELECT id, subject, body, headers, $2, $3 FROM {outbox} WHERE id = $1"
                ),
                vec![
                    Value::Integer(id),
                    Value::Text(reason.clone()),
                    Value::Integer(now_ms),
                ],
            )
            .await?;
        session
            .execute(
                &format!("DELETE FROM {outbox} WHERE id = $1"),
                vec![Value::Integer(id)],
            )
            .await?;
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
            .query(
                &format!("SELECT COUNT(*) FROM {}", self.tables.outbox),
                Vec::new(),
            )
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

/// Where one batch's statements run. On PostgreSQL, a transaction that
/// holds the claimed rows until they are settled. On SQLite, the pool
/// itself: this relay is the file's only sender, so nothing needs claiming,
/// and no write lock is held while messages go out.
enum Session<'a> {
    Pool(&'a Database),
    Claimed(Transaction),
}

impl<'a> Session<'a> {
    async fn begin(database: &'a Database) -> Result<Self, sqlx::Error> {
        Ok(if database.is_postgres() {
            Self::Claimed(database.begin().await?)
        } else {
            Self::Pool(database)
        })
    }

    async fn query(
        &mut self,
        statement: &str,
    ) -> Result<crate::platform::sql::RowSet, sqlx::Error> {
        match self {
            Self::Pool(database) => database.query(statement, Vec::new()).await,
            Self::Claimed(transaction) => transaction.query(statement, Vec::new()).await,
        }
    }

    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, sqlx::Error> {
        match self {
            Self::Pool(database) => database.execute(statement, params).await,
            Self::Claimed(transaction) => transaction.execute(statement, params).await,
        }
    }

    /// Makes the batch's deletions final and lets go of its claims.
    async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Pool(_) => Ok(()),
            Self::Claimed(transaction) => transaction.commit().await,
        }
    }
}
