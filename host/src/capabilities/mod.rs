//! Host interfaces granted to guests, one module per capability.
//!
//! Every capability has the same shape: an `AppState` built once by
//! `configure` (validates grants, opens pools, fails fast), a cheap
//! per-instance `InstanceState`, and one `add_to_linker`. None reaches into
//! another's state; what one needs from another is passed at configure time.

pub mod allowed_hosts;
pub mod files;
pub mod key_value;
pub mod llm;
pub mod messaging;
pub mod mqtt;
pub mod mysql;
pub mod outbound_http;
pub mod postgres;
pub mod redis;
pub mod sockets;
pub mod sql;
pub mod sqlite;
pub mod sqlite_guard;
pub mod stdio;
pub mod variables;

use std::path::PathBuf;

use wasmtime::component::{Linker, Resource, ResourceTable};

use crate::bus::Bus;
use crate::engine;
use crate::manifest::{App, RuntimeConfig};

/// What capabilities take from the command line rather than the manifest.
#[derive(Debug, Default, Clone)]
pub struct HostSettings {
    /// Where default stores and databases keep their files.
    pub state_dir: PathBuf,
    /// `--variable name=value`, in order (later wins).
    pub cli_variables: Vec<(String, String)>,
    /// `--sqlite` statements, run against the `default` database at start-up.
    pub sqlite_statements: Vec<String>,
}

/// Every capability's per-app state.
pub struct AppCapabilities {
    /// `spin:variables`.
    pub variables: variables::AppState,
    /// `spin:key-value`.
    pub key_value: key_value::AppState,
    /// `spin:sqlite`.
    pub sqlite: sqlite::AppState,
    /// `spin:postgres`.
    pub postgres: postgres::AppState,
    /// `spin:redis`: outbound Redis.
    pub redis: redis::AppState,
    /// `spin:mqtt`, `fermyon:spin/mqtt`: outbound MQTT.
    pub mqtt: mqtt::AppState,
    /// `spin:mysql`, `fermyon:spin/mysql`: outbound MySQL.
    pub mysql: mysql::AppState,
    /// `spindle:platform/sql`: each component's managed database.
    pub sql: sql::AppState,
    /// `spindle:platform/messaging`: publish and request on the bus.
    pub messaging: messaging::AppState,
    /// Outbound `wasi:http` and service chaining.
    pub outbound_http: outbound_http::AppState,
    /// Guest stdout and stderr: per-component log files and the host log.
    pub stdio: stdio::AppState,
    /// Spin's `files`: read-only mounts in the guest's filesystem.
    pub files: files::AppState,
    /// `wasi:sockets`, gated by `allowed_outbound_hosts`.
    pub sockets: sockets::AppState,
}

impl AppCapabilities {
    /// Configures every capability for `app`, failing on the first problem.
    /// `bus` is where outbox messages are relayed and guests publish.
    pub async fn configure(
        app: &App,
        runtime_config: &RuntimeConfig,
        settings: &HostSettings,
        bus: &Bus,
    ) -> anyhow::Result<Self> {
        // Other capabilities render their manifest templates with these.
        let variables =
            variables::AppState::configure(app, &runtime_config.variables_providers, settings)?;
        // Rendered once for every capability that connects somewhere.
        let allowed_hosts = allowed_hosts::render_all(app, &variables)?;
        // The stores and databases open concurrently: start-up waits for
        // the slowest, not for all of them in turn.
        let (key_value, sqlite, sql) = tokio::try_join!(
            key_value::AppState::configure(app, runtime_config, settings),
            sqlite::AppState::configure(app, runtime_config, settings),
            sql::AppState::configure(app, runtime_config, settings, bus),
        )?;
        Ok(Self {
            key_value,
            sqlite,
            postgres: postgres::AppState::configure(app, &allowed_hosts),
            redis: redis::AppState::configure(&allowed_hosts),
            mqtt: mqtt::AppState::configure(&allowed_hosts),
            mysql: mysql::AppState::configure(&allowed_hosts),
            sql,
            messaging: messaging::AppState::configure(app, bus),
            outbound_http: outbound_http::AppState::configure(app, runtime_config, &allowed_hosts),
            stdio: stdio::AppState::configure(app, settings)?,
            files: files::AppState::configure(app, settings)?,
            sockets: sockets::AppState::configure(&allowed_hosts),
            variables,
        })
    }
}

impl AppCapabilities {
    /// Readiness probes of the backends the capabilities opened.
    pub fn probes(&self) -> Vec<crate::health::Probe> {
        let mut probes = self.sql.probes();
        probes.extend(self.key_value.probes());
        probes
    }
}

/// What a capability's host functions borrow from an instance's store data:
/// the capability's own state, and the table where the guest's handles
/// (stores, connections, transactions) live.
pub struct View<'a, S> {
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
    /// The capability's per-instance state.
    pub state: &'a mut S,
}

impl<S> View<'_, S> {
    /// The resource behind `handle`; a handle not in the table traps.
    pub fn resource<R: Clone + 'static>(&self, handle: &Resource<R>) -> wasmtime::Result<R> {
        Ok(self.table.get(handle)?.clone())
    }
}

/// How long a SQLite writer waits for another's lock before it fails.
const SQLITE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connect options every SQLite file the host opens shares (key-value
/// stores, `spin:sqlite` databases, managed databases): the file and its
/// folder are created if missing, and WAL lets readers and a writer proceed
/// side by side.
pub fn sqlite_file_options(
    path: &std::path::Path,
) -> std::io::Result<sqlx::sqlite::SqliteConnectOptions> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT))
}

/// Links every capability's interfaces.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    variables::add_to_linker(linker)?;
    key_value::add_to_linker(linker)?;
    sqlite::add_to_linker(linker)?;
    postgres::add_to_linker(linker)?;
    sql::add_to_linker(linker)?;
    messaging::add_to_linker(linker)?;
    outbound_http::add_to_linker(linker)?;
    llm::add_to_linker(linker)?;
    redis::add_to_linker(linker)?;
    mqtt::add_to_linker(linker)?;
    mysql::add_to_linker(linker)?;
    Ok(())
}
