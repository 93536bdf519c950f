//! PostgreSQL servers the guest names by address, behind every version of
//! Spin's interface: `spin:postgres/postgres@4.2.0` (spin-sdk 7, WASI 0.3),
//! `@4.0.0` and `@3.0.0` (spin-sdk 3-6), and `fermyon:spin/postgres@2.0.0`
//! (Spin 2 apps). This module is the backend; each version's file only
//! translates its types onto it.
//!
//! Granted by `allowed_outbound_hosts` (e.g. `postgres://db:5432`); there is
//! no runtime-config key, since the guest brings its own address. A guest
//! connection holds one pooled server connection for its lifetime, so
//! session state such as an open transaction stays with it; the pools (one
//! per address and credentials) are shared by every instance of the app.
//! This host speaks no TLS: `sslmode=require` and custom CA roots are refused
//! with a clear error rather than silently connecting unencrypted.
//!
//! Values and errors travel through the backend as 4.2's types, a superset
//! of every earlier version's: older versions widen their parameters into
//! them and narrow results and errors out of them.

mod address;
mod client;
mod fermyon_v2;
mod spin_v3;
mod spin_v4_0;
mod spin_v4_2;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Linker, Resource};

use super::View;
use super::allowed_hosts::AllowedHosts;
use crate::engine;
use crate::manifest::App;

use address::Address;
pub use client::Connection;
use client::Pools;
pub(crate) use client::reset_session;
/// The backend's values and errors: `spin:postgres@4.2.0`'s.
use spin_v4_2::wit as model;

/// Per-app state: each component's allow-list and the shared pools.
pub struct AppState {
    /// Rendered and parsed `allowed_outbound_hosts`, by component id.
    allowed_hosts: HashMap<String, Arc<AllowedHosts>>,
    /// Server connections, shared by every instance of every component.
    pools: Arc<Pools>,
}

impl AppState {
    /// Takes every component's allow-list; pools open lazily, so no server
    /// needs to be up at start-up.
    pub fn configure(
        app: &App,
        allowed_hosts: &crate::capabilities::allowed_hosts::ByComponent,
    ) -> Self {
        // Pools are shared by every component: a statement may run as long
        // as the longest call of any of them.
        let statement_limit = app
            .components
            .values()
            .map(engine::call_timeout)
            .max()
            .unwrap_or(engine::DEFAULT_CALL_TIMEOUT);
        Self {
            allowed_hosts: allowed_hosts.clone(),
            pools: Arc::new(Pools::new(statement_limit)),
        }
    }

    /// The state one instance of `component` gets.
    pub fn instance_state(&self, component: &str) -> InstanceState {
        InstanceState {
            allowed_hosts: self
                .allowed_hosts
                .get(component)
                .cloned()
                .unwrap_or_default(),
            pools: self.pools.clone(),
        }
    }
}

/// One instance's view: what it may reach, and where connections come from.
#[derive(Clone)]
pub struct InstanceState {
    allowed_hosts: Arc<AllowedHosts>,
    pools: Arc<Pools>,
}

impl InstanceState {
    /// Checks `address` against the allow-list and takes a connection for it.
    async fn open(&self, address: &str) -> Result<Connection, PgError> {
        let address = Address::parse(address).map_err(PgError::Address)?;
        if !self
            .allowed_hosts
            .allows("postgres", &address.host, Some(address.port))
        {
            tracing::warn!(
                host = %address.host,
                port = address.port,
                "postgres connection denied: not in allowed_outbound_hosts"
            );
            return Err(PgError::AccessDenied);
        }
        self.pools.connect(&address).await
    }
}

/// Links every version of the interface; guests reach the backend through
/// [`InstanceState`] and the store's resource table.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    spin_v4_2::add_to_linker(linker)?;
    spin_v4_0::add_to_linker(linker)?;
    spin_v3::add_to_linker(linker)?;
    fermyon_v2::add_to_linker(linker)
}

fn view(state: &mut engine::InstanceState) -> View<'_, InstanceState> {
    View {
        table: &mut state.table,
        state: &mut state.postgres,
    }
}

/// The calls every version's synchronous `connection` makes, in the
/// backend's types; the outer result traps (a bad handle), the inner one is
/// for the guest.
impl View<'_, InstanceState> {
    /// Opens a connection to `address` and hands the guest its handle.
    async fn open_connection(
        &mut self,
        address: &str,
    ) -> wasmtime::Result<Result<Resource<Connection>, PgError>> {
        let state = self.state.clone();
        match state.open(address).await {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(error)),
        }
    }

    /// Runs `statement` on the connection behind `handle`, collecting its rows.
    async fn run_query(
        &mut self,
        handle: &Resource<Connection>,
        statement: String,
        params: Vec<model::ParameterValue>,
    ) -> wasmtime::Result<Result<model::RowSet, PgError>> {
        let connection = self.resource(handle)?;
        Ok(connection.query(statement, params).await)
    }

    /// Runs `statement` on the connection behind `handle`.
    async fn run_execute(
        &mut self,
        handle: &Resource<Connection>,
        statement: String,
        params: Vec<model::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, PgError>> {
        let connection = self.resource(handle)?;
        Ok(connection.execute(statement, params).await)
    }

    /// Lets go of the guest's handle; the server connection goes back to its
    /// pool once no query streams from it.
    fn close(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

/// Why an operation failed, before it becomes the interface's [`Error`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The address could not be used.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// `allowed_outbound_hosts` does not include the address.
    #[error("access denied")]
    AccessDenied,
    /// The guest named more distinct addresses than the host keeps pools for.
    #[error("too many distinct database addresses")]
    TooManyAddresses,
    /// No server connection could be had.
    #[error("connecting: {0}")]
    Connect(#[source] sqlx::Error),
    /// A parameter or a result value has no counterpart on the other side.
    #[error(transparent)]
    Conversion(#[from] ConversionError),
    /// The server (or the connection to it) failed the statement.
    #[error("query: {0}")]
    Query(#[source] sqlx::Error),
    /// A streaming query's task ended without reporting its outcome.
    #[error("the query ended unexpectedly")]
    Interrupted,
    /// The rows of a collected (not streamed) query outgrew the cap.
    #[error(
        "the query's rows exceed {} MiB, the most one query may return; \
         select fewer, or stream them (query-async, spin:postgres@4.2)",
        client::MAX_RESULT_BYTES >> 20
    )]
    TooLarge,
}

/// Why an address cannot be used; never quotes the address (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Neither `postgres://…` nor `key=value` text.
    #[error("the address must be a postgres:// URL or key=value settings")]
    Scheme,
    /// A part that does not parse, e.g. a port that is not a number.
    #[error("the address has an invalid {0}")]
    Invalid(String),
    /// A required part is absent.
    #[error("the address names no {0}")]
    Missing(&'static str),
    /// A setting this host does not know or support.
    #[error("connection setting `{0}` is not supported")]
    UnknownSetting(String),
    /// `sslmode=require` and stronger, or a custom CA root.
    #[error("TLS connections are not supported by this host; use sslmode=disable or prefer")]
    Tls,
    /// `host=/path`.
    #[error("Unix-domain sockets are not supported; give a TCP host")]
    UnixSocket,
    /// `host=a,b`.
    #[error("connecting to several hosts is not supported")]
    SeveralHosts,
}

/// A value with no counterpart on the other side.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// A guest parameter PostgreSQL cannot take.
    #[error("parameter ${position}: {reason}")]
    Parameter {
        /// 1-based, as in `$1`.
        position: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A result cell the interface cannot carry.
    #[error("column {index}: {reason}")]
    Cell {
        /// 0-based column index.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The one place errors become the interface's variants (4.2's; each older
/// version narrows them). Connection failures say what went wrong but never
/// the address, host or password.
fn to_guest_error(error: PgError) -> model::Error {
    use model::{Error, QueryError};
    match error {
        PgError::Address(error) => Error::ConnectionFailed(error.to_string()),
        PgError::AccessDenied => Error::ConnectionFailed(
            "access denied: the component's allowed_outbound_hosts does not include this address"
                .into(),
        ),
        PgError::TooManyAddresses => Error::ConnectionFailed(PgError::TooManyAddresses.to_string()),
        PgError::Connect(error) => Error::ConnectionFailed(match &error {
            sqlx::Error::Database(db) => {
                match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    Some(pg) => format!("{} (SQLSTATE {})", pg.message(), pg.code()),
                    None => db.message().to_owned(),
                }
            }
            sqlx::Error::Io(io) => format!("could not reach the server: {io}"),
            sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
            other => other.to_string(),
        }),
        PgError::Conversion(error @ ConversionError::Parameter { .. }) => {
            Error::BadParameter(error.to_string())
        }
        PgError::Conversion(error @ ConversionError::Cell { .. }) => {
            Error::ValueConversionFailed(error.to_string())
        }
        PgError::Query(sqlx::Error::Database(db)) => {
            match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                Some(pg) => Error::QueryFailed(QueryError::DbError(client::db_error(pg))),
                None => Error::QueryFailed(QueryError::Text(db.message().to_owned())),
            }
        }
        PgError::Query(sqlx::Error::Io(io)) => {
            Error::ConnectionFailed(format!("lost the connection to the server: {io}"))
        }
        PgError::Query(error) => Error::QueryFailed(QueryError::Text(error.to_string())),
        PgError::Interrupted => Error::Other(PgError::Interrupted.to_string()),
        PgError::TooLarge => Error::QueryFailed(QueryError::Text(PgError::TooLarge.to_string())),
    }
}

/// A query failure as the one string versions before 4.0 carry: for a
/// server error, the text form 4.0 keeps for their sake (`as-text`).
fn query_failure_text(error: model::QueryError) -> String {
    match error {
        model::QueryError::Text(text) => text,
        model::QueryError::DbError(error) => error.as_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::HostSettings;
    use std::path::Path;

    fn configure(allowed: &str) -> anyhow::Result<AppState> {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [variables]\ndb_host = {{ default = \"db.internal\" }}\n\
             [component.c]\nsource = \"c.wasm\"\nallowed_outbound_hosts = [{allowed}]\n"
        );
        let app = crate::manifest::parse(&manifest, Path::new("/nonexistent/spin.toml"))
            .expect("valid manifest");
        let variables = crate::capabilities::variables::AppState::configure(
            &app,
            &[],
            &HostSettings::default(),
        )?;
        let allowed_hosts = crate::capabilities::allowed_hosts::render_all(&app, &variables)?;
        Ok(AppState::configure(&app, &allowed_hosts))
    }

    #[test]
    fn allowed_hosts_render_their_templates_at_configure_time() {
        let state = configure("\"postgres://{{ db_host }}:5432\"").expect("configures");
        let instance = state.instance_state("c");
        assert!(
            instance
                .allowed_hosts
                .allows("postgres", "db.internal", Some(5432))
        );
        assert!(
            !instance
                .allowed_hosts
                .allows("postgres", "other", Some(5432))
        );
    }

    #[test]
    fn malformed_allowed_host_stops_start_up_naming_the_component() {
        let error = configure("\"postgres://db:port\"")
            .err()
            .expect("must fail");
        let message = format!("{error:#}");
        assert!(
            message.contains("[component.c] allowed_outbound_hosts") && message.contains("port"),
            "{message}"
        );
    }

    #[test]
    fn component_without_grants_may_reach_nothing() {
        let state = configure("").expect("configures");
        assert!(!state.instance_state("c").allowed_hosts.allows(
            "postgres",
            "localhost",
            Some(5432)
        ));
        assert!(
            !state
                .instance_state("unknown")
                .allowed_hosts
                .allows("postgres", "x", Some(5432))
        );
    }
}
