//! `spindle:platform/sql@0.1.0`: the component's own managed database.
//!
//! Granted by `[component.x.tool.spindle] database = "label"`; the backend is
//! a SQLite file under the state dir unless the runtime config maps the label
//! (`[database.label] url = "postgres://..."`). The guest never sees where
//! its database lives and cannot name another. At start-up the host applies
//! the component's migrations (`migrations/<component>/` unless the manifest
//! says otherwise) and starts the outbox relay, before anything is served.

mod database;
mod migrations;
mod outbox;
mod params;
mod provision;
mod watchdog;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tracing::Instrument;
use wasmtime::component::{Accessor, HasData, Linker, Resource};

use super::{HostSettings, View, sqlite_guard};
use crate::bus::{self, Bus, Message, TRACEPARENT_HEADER};
use crate::calls::{self, Calls};
use crate::engine;
use crate::manifest::{App, Component, RuntimeConfig};
use crate::telemetry;
use database::{Access, Database, Transaction};
use outbox::RelayWaker;

use crate::platform::sql::{self as wit, Error, RowSet, Value};

/// Every component's database, opened and migrated at start-up.
pub struct AppState {
    databases: HashMap<String, Arc<ComponentDatabase>>,
}

/// One component's database and the relay of its outbox.
struct ComponentDatabase {
    database: Database,
    relay: RelayWaker,
    /// The subjects the component may publish to, through the outbox too.
    allowed_publish: Vec<String>,
}

impl ComponentDatabase {
    /// Refuses what `allowed_publish` does not allow, as messaging does:
    /// the outbox is not a way around the manifest.
    fn may_publish(&self, subject: &str) -> Result<(), Error> {
        check_publish(&self.allowed_publish, subject).map_err(Error::Other)
    }
}

/// Whether a component granted `allowed_publish` may publish to `subject`.
fn check_publish(allowed_publish: &[String], subject: &str) -> Result<(), String> {
    if !bus::is_literal_subject(subject) {
        return Err(format!(
            "`{subject}` is not a subject one can publish to (dot-separated tokens, no wildcards)"
        ));
    }
    if allowed_publish
        .iter()
        .any(|pattern| bus::subject_matches(pattern, subject))
    {
        Ok(())
    } else {
        Err(format!(
            "publishing to `{subject}` is not allowed; add it to [component.<id>.tool.spindle] allowed_publish"
        ))
    }
}

impl AppState {
    /// Opens the database of every component that declares one, applies its
    /// migrations and starts its outbox relay to `bus`. A label may belong to
    /// one component only: each service owns its data.
    pub async fn configure(
        app: &App,
        runtime_config: &RuntimeConfig,
        settings: &HostSettings,
        bus: &Bus,
    ) -> anyhow::Result<Self> {
        let mut owners: HashMap<&str, &str> = HashMap::new();
        let mut owned = Vec::new();
        for component in app.components.values() {
            let Some(label) = component.spindle.database.as_deref() else {
                continue;
            };
            if let Some(owner) = owners.insert(label, &component.id) {
                bail!(
                    "database `{label}` is declared by both `{owner}` and `{}`; \
                     each component owns its own database",
                    component.id
                );
            }
            owned.push((component, label));
        }
        // Opened together: each waits mostly on its own file or server
        // (connecting, checking migrations), so the app starts about as fast
        // as its slowest database instead of the sum of them.
        let opened =
            futures::future::try_join_all(owned.into_iter().map(|(component, label)| async move {
                open(app, component, label, runtime_config, settings)
                    .await
                    .with_context(|| format!("component `{}`: database `{label}`", component.id))
                    .map(|(database, host)| (component, database, host))
            }))
            .await?;
        let mut databases = HashMap::new();
        for (component, database, host) in opened {
            let relay = outbox::start_relay(
                component.id.clone(),
                host,
                bus.clone(),
                component.spindle.allowed_publish.clone(),
            );
            databases.insert(
                component.id.clone(),
                Arc::new(ComponentDatabase {
                    database,
                    relay,
                    allowed_publish: component.spindle.allowed_publish.clone(),
                }),
            );
        }
        Ok(Self { databases })
    }

    /// One readiness probe per component database.
    pub fn probes(&self) -> Vec<crate::health::Probe> {
        self.databases
            .iter()
            .map(|(component, owned)| {
                let database = owned.database.clone();
                crate::health::Probe::new(format!("database:{component}"), "database", move || {
                    let database = database.clone();
                    Box::pin(async move {
                        database
                            .query("SELECT 1", Vec::new())
                            .await
                            .map(drop)
                            .map_err(|error| error.to_string())
                    })
                })
            })
            .collect()
    }

    /// The database `component` may use, if it declared one.
    pub fn instance_state(&self, component: &str, calls: &Calls) -> InstanceState {
        InstanceState {
            database: self.databases.get(component).cloned(),
            calls: calls.clone(),
        }
    }
}

/// Opens, migrates and prepares a component's database; returns the handle
/// its statements go through and the host's own: on SQLite a second pool
/// outside the guest sandbox, on PostgreSQL a pool as the database's host
/// role (see [`provision`]).
async fn open(
    app: &App,
    component: &Component,
    label: &str,
    runtime_config: &RuntimeConfig,
    settings: &HostSettings,
) -> anyhow::Result<(Database, Database)> {
    // A statement may run as long as the call that sent it.
    let statement_limit = engine::call_timeout(component);
    let (guest, host) = match runtime_config.databases.get(label) {
        Some(config) => open_postgres(app, component, &config.url, statement_limit)
            .await
            .with_context(|| {
                format!(
                    "PostgreSQL database `{}`",
                    database::database_name(&config.url)
                )
            })?,
        None => {
            let path = settings
                .state_dir
                .join("databases")
                .join(format!("{label}.db"));
            open_sqlite(app, component, &path, statement_limit)
                .await
                .with_context(|| format!("opening {}", path.display()))?
        }
    };
    tracing::info!(component = %component.id, database = %label, backend = host.backend(), "database ready");
    Ok((guest, host))
}

async fn open_sqlite(
    app: &App,
    component: &Component,
    path: &std::path::Path,
    statement_limit: Duration,
) -> anyhow::Result<(Database, Database)> {
    let host = Database::open_sqlite(path, Access::Host).await?;
    prepare(app, component, &host).await?;
    let guest = Database::open_sqlite(path, Access::Guest { statement_limit }).await?;
    Ok((guest, host))
}

async fn open_postgres(
    app: &App,
    component: &Component,
    admin_url: &str,
    statement_limit: Duration,
) -> anyhow::Result<(Database, Database)> {
    let roles = provision::provision(admin_url, statement_limit).await?;
    let host = Database::open_postgres(roles.host, Access::Host)
        .await
        .context("connecting as the host role")?;
    prepare(app, component, &host).await?;
    for grant in provision::app_grants(&roles.app_role) {
        host.execute(&grant, Vec::new())
            .await
            .with_context(|| format!("granting the component's role its tables: {grant}"))?;
    }
    let guest = Database::open_postgres(roles.app, Access::Guest { statement_limit })
        .await
        .context("connecting as the component's role")?;
    watchdog::start(host.clone(), roles.app_role, statement_limit);
    Ok((guest, host))
}

/// Applies the component's migrations and creates the outbox, as the host.
async fn prepare(app: &App, component: &Component, host: &Database) -> anyhow::Result<()> {
    if let Some(folder) = migrations_folder(app, component) {
        migrations::apply(host, &folder).await?;
    }
    outbox::create_table(host)
        .await
        .context("creating the outbox table")
}

/// The manifest's `migrations` folder, or `migrations/<component>` beside
/// the manifest when that exists.
fn migrations_folder(app: &App, component: &Component) -> Option<PathBuf> {
    component.spindle.migrations.clone().or_else(|| {
        let conventional = app.base_dir.join("migrations").join(&component.id);
        conventional.is_dir().then_some(conventional)
    })
}

/// One instance's access: its component's database, if any.
pub struct InstanceState {
    database: Option<Arc<ComponentDatabase>>,
    /// The running calls, whose spans are the parents of their statements'.
    calls: Calls,
}

/// An open transaction as the guest holds it. `open` is taken while a call
/// runs and is `None` once committed or rolled back.
pub struct TransactionHandle {
    open: Option<Transaction>,
    owner: Arc<ComponentDatabase>,
}

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Sql>(linker, |state| View {
        state: &mut state.sql,
        table: &mut state.table,
    })
}

struct Sql;

impl HasData for Sql {
    type Data<'a> = View<'a, InstanceState>;
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostTransaction for View<'_, InstanceState> {
    fn drop(&mut self, handle: Resource<TransactionHandle>) -> wasmtime::Result<()> {
        // Dropping an sqlx transaction that was not committed rolls it back.
        self.table.delete(handle)?;
        Ok(())
    }
}

fn database<T>(accessor: &Accessor<T, Sql>) -> Result<Arc<ComponentDatabase>, Error> {
    accessor
        .with(|mut access| access.get().state.database.clone())
        .ok_or_else(|| {
            Error::Other("this component has no database; declare one with [component.<id>.tool.spindle] database = \"label\"".into())
        })
}

impl<T> wit::HostWithStore<T> for Sql {
    async fn query(
        accessor: &Accessor<T, Self>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let span = statement_span(accessor, &statement);
        let owner = match database(accessor) {
            Ok(owner) => owner,
            Err(error) => return Ok(Err(error)),
        };
        let rows = owner
            .database
            .query(&statement, params)
            .instrument(span)
            .await;
        Ok(rows.map_err(to_guest_error))
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let span = statement_span(accessor, &statement);
        let owner = match database(accessor) {
            Ok(owner) => owner,
            Err(error) => return Ok(Err(error)),
        };
        let affected = owner
            .database
            .execute(&statement, params)
            .instrument(span)
            .await;
        Ok(affected.map_err(to_guest_error))
    }
}

impl<T> wit::HostTransactionWithStore<T> for Sql {
    async fn begin(
        accessor: &Accessor<T, Self>,
    ) -> wasmtime::Result<Result<Resource<TransactionHandle>, Error>> {
        let owner = match database(accessor) {
            Ok(owner) => owner,
            Err(error) => return Ok(Err(error)),
        };
        let transaction = match owner.database.begin().await {
            Ok(transaction) => transaction,
            Err(error) => return Ok(Err(to_guest_error(error))),
        };
        let handle = TransactionHandle {
            open: Some(transaction),
            owner,
        };
        let resource = accessor.with(|mut access| access.get().table.push(handle))?;
        Ok(Ok(resource))
    }

    async fn query(
        accessor: &Accessor<T, Self>,
        this: Resource<TransactionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        with_open(accessor, &this, async |transaction| {
            transaction
                .query(&statement, params)
                .await
                .map_err(to_guest_error)
        })
        .await
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<TransactionHandle>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        with_open(accessor, &this, async |transaction| {
            transaction
                .execute(&statement, params)
                .await
                .map_err(to_guest_error)
        })
        .await
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<TransactionHandle>,
        subject: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let call = call_span(accessor);
        let span = crate::capability_span!(
            call,
            "sql.publish",
            otel.name = %format!("publish {subject}"),
            otel.kind = "producer",
            messaging.destination.name = %subject,
        );
        let allowed = accessor.with(|mut access| -> wasmtime::Result<Result<(), Error>> {
            let handle = access.get().table.get(&this)?;
            Ok(handle.owner.may_publish(&subject))
        })?;
        if let Err(refused) = allowed {
            return Ok(Err(refused));
        }
        if let Err(invalid) = bus::check_headers(&headers) {
            return Ok(Err(Error::Other(invalid.to_string())));
        }
        let mut message = Message {
            subject,
            body: Bytes::from(body),
            headers,
            reply_to: None,
        };
        // Whoever consumes the relayed message continues this trace.
        if message.header(TRACEPARENT_HEADER).is_none()
            && let Some(traceparent) = telemetry::traceparent(&span)
        {
            message
                .headers
                .push((TRACEPARENT_HEADER.to_string(), traceparent));
        }
        with_open(accessor, &this, async |transaction| {
            outbox::insert(transaction, message)
                .await
                .map_err(to_guest_error)
        })
        .instrument(span)
        .await
    }

    async fn commit(
        accessor: &Accessor<T, Self>,
        this: Resource<TransactionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (transaction, owner) = match take(accessor, &this)? {
            Ok(taken) => taken,
            Err(error) => return Ok(Err(error)),
        };
        let committed = transaction.commit().await.map_err(to_guest_error);
        if committed.is_ok() {
            owner.relay.wake();
        }
        Ok(committed)
    }

    async fn rollback(
        accessor: &Accessor<T, Self>,
        this: Resource<TransactionHandle>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (transaction, _) = match take(accessor, &this)? {
            Ok(taken) => taken,
            Err(error) => return Ok(Err(error)),
        };
        Ok(transaction.rollback().await.map_err(to_guest_error))
    }
}

/// Takes the transaction out of its handle for a call; a handle whose
/// transaction is finished, or in use by another call, is `transaction-closed`.
fn take<T>(
    accessor: &Accessor<T, Sql>,
    handle: &Resource<TransactionHandle>,
) -> wasmtime::Result<Result<(Transaction, Arc<ComponentDatabase>), Error>> {
    accessor.with(|mut access| {
        let handle = access.get().table.get_mut(handle)?;
        Ok(match handle.open.take() {
            Some(transaction) => Ok((transaction, handle.owner.clone())),
            None => Err(Error::TransactionClosed),
        })
    })
}

/// Runs `call` on the open transaction and puts it back afterwards.
async fn with_open<T, R>(
    accessor: &Accessor<T, Sql>,
    handle: &Resource<TransactionHandle>,
    call: impl AsyncFnOnce(&mut Transaction) -> Result<R, Error>,
) -> wasmtime::Result<Result<R, Error>> {
    let (mut transaction, _) = match take(accessor, handle)? {
        Ok(taken) => taken,
        Err(error) => return Ok(Err(error)),
    };
    let result = call(&mut transaction).await;
    accessor.with(|mut access| {
        access.get().table.get_mut(handle)?.open = Some(transaction);
        Ok(result)
    })
}

/// The span of the guest call making a host call.
fn call_span<T>(accessor: &Accessor<T, Sql>) -> tracing::Span {
    accessor.with(|mut access| {
        let task = calls::root_task(&mut access);
        access.get().state.calls.of(task).span
    })
}

/// The span of one statement, named by its kind (`SELECT`, `INSERT`, ...).
fn statement_span<T>(accessor: &Accessor<T, Sql>, statement: &str) -> tracing::Span {
    let call = call_span(accessor);
    let kind = statement_kind(statement);
    crate::capability_span!(
        call,
        "sql.statement",
        otel.name = %format!("sql {kind}"),
        otel.kind = "client",
        db.operation.name = %kind,
    )
}

/// The statement's first keyword, for spans: `SELECT`, `INSERT`, ...
fn statement_kind(statement: &str) -> String {
    statement
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// PostgreSQL's SQLSTATE for a statement cancelled by its timeout.
const QUERY_CANCELED: &str = "57014";

/// The one place backend errors become the interface's variants; messages
/// are the database's own, which never include connection strings.
fn to_guest_error(error: sqlx::Error) -> Error {
    match error {
        sqlx::Error::Database(db) if sqlite_guard::is_refusal(db.message()) => {
            Error::BadQuery(format!("{}: {}", db.message(), sqlite_guard::REFUSED))
        }
        // SQLite's statement clock, or PostgreSQL's `statement_timeout`.
        sqlx::Error::Database(db)
            if db.message() == sqlite_guard::INTERRUPTED
                || db.code().as_deref() == Some(QUERY_CANCELED) =>
        {
            Error::Other(format!("{}: {}", sqlite_guard::TIMED_OUT, db.message()))
        }
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::NotNullViolation
                | sqlx::error::ErrorKind::CheckViolation => Error::ConstraintViolation(message),
                _ => Error::BadQuery(message),
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable("the database did not answer".into())
        }
        sqlx::Error::Encode(error) | sqlx::Error::Decode(error) => {
            Error::BadQuery(error.to_string())
        }
        sqlx::Error::ColumnDecode { source, .. } => Error::BadQuery(source.to_string()),
        other => Error::Other(other.to_string()),
    }
}
