//! `spin:postgres/postgres@4.2.0`: connections to PostgreSQL servers the
//! guest names by address.
//!
//! Granted by `allowed_outbound_hosts` (e.g. `postgres://db:5432`); there is
//! no runtime-config key, since the guest brings its own address. A guest
//! connection holds one pooled server connection for its lifetime, so
//! session state such as an open transaction stays with it; the pools (one
//! per address and credentials) are shared by every instance of the app.
//! This host speaks no TLS: `sslmode=require` and custom CA roots are refused
//! with a clear error rather than silently connecting unencrypted.

mod address;
mod client;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use tracing::Instrument;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use super::View;
use super::allowed_hosts::AllowedHosts;
use crate::engine;
use crate::manifest::App;

use address::Address;
pub use client::Connection;
use client::Pools;
pub(crate) use client::reset_session;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-pg",
        // The synchronous functions wait on the network too.
        imports: { default: async | trappable | tracing },
        with: {
            "spin:postgres/postgres.connection": super::Connection,
            "spin:postgres/postgres.connection-builder": super::ConnectionBuilder,
        },
    });
}

use bindings::spin::postgres::postgres::{self as wit, Column, Error, ParameterValue, Row, RowSet};

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

/// Links the interface; guests reach it through [`InstanceState`] and the
/// store's resource table.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Postgres>(linker, |state| View {
        table: &mut state.table,
        state: &mut state.postgres,
    })
}

/// A `connection-builder`: the address until `build` opens it.
pub struct ConnectionBuilder {
    address: String,
}

struct Postgres;

impl HasData for Postgres {
    type Data<'a> = View<'a, InstanceState>;
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = self.state.clone();
        let opened = state
            .open(&address)
            .instrument(tracing::debug_span!("postgres.open"))
            .await;
        match opened {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn query(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let connection = self.resource(&handle)?;
        let result = connection
            .query(statement, params)
            .instrument(tracing::debug_span!("postgres.query"))
            .await;
        Ok(result.map_err(to_guest_error))
    }

    async fn execute(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let connection = self.resource(&handle)?;
        let result = connection
            .execute(statement, params)
            .instrument(tracing::debug_span!("postgres.execute"))
            .await;
        Ok(result.map_err(to_guest_error))
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        // The server connection goes back to its pool once no query streams from it.
        self.table.delete(handle)?;
        Ok(())
    }
}

impl wit::HostConnectionBuilder for View<'_, InstanceState> {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<ConnectionBuilder>> {
        Ok(self.table.push(ConnectionBuilder { address })?)
    }

    async fn set_ca_root(
        &mut self,
        handle: Resource<ConnectionBuilder>,
        _certificate: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let _span = tracing::debug_span!("postgres.set_ca_root").entered();
        self.table.get(&handle)?;
        // A CA root only matters for TLS, which this host does not speak:
        // saying so now beats failing on every later `build`.
        Ok(Err(to_guest_error(PgError::Address(AddressError::Tls))))
    }

    async fn build(
        &mut self,
        handle: Resource<ConnectionBuilder>,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let address = self.table.get(&handle)?.address.clone();
        let state = self.state.clone();
        let opened = state
            .open(&address)
            .instrument(tracing::debug_span!("postgres.build"))
            .await;
        match opened {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn drop(&mut self, handle: Resource<ConnectionBuilder>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl<T> wit::HostConnectionWithStore<T> for Postgres {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = accessor.with(|mut access| access.get().state.clone());
        let opened = state
            .open(&address)
            .instrument(tracing::debug_span!("postgres.open_async"))
            .await;
        match opened {
            Ok(connection) => Ok(Ok(
                accessor.with(|mut access| access.get().table.push(connection))?
            )),
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn query_async(
        accessor: &Accessor<T, Self>,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<
        Result<
            (
                Vec<Column>,
                StreamReader<Row>,
                FutureReader<Result<(), Error>>,
            ),
            Error,
        >,
    > {
        let connection = accessor.with(|mut access| access.get().resource(&handle))?;
        let started = connection
            .query_streaming(statement, params)
            .instrument(tracing::debug_span!("postgres.query_async"))
            .await;
        let (columns, rows, done) = match started {
            Ok(started) => started,
            Err(error) => return Ok(Err(to_guest_error(error))),
        };
        let done = async move {
            let outcome = done.await.unwrap_or(Err(PgError::Interrupted));
            Ok::<_, wasmtime::Error>(outcome.map_err(to_guest_error))
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, done)?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let connection = accessor.with(|mut access| access.get().resource(&handle))?;
        let result = connection
            .execute(statement, params)
            .instrument(tracing::debug_span!("postgres.execute_async"))
            .await;
        Ok(result.map_err(to_guest_error))
    }
}

impl<T> wit::HostConnectionBuilderWithStore<T> for Postgres {
    async fn build_async(
        accessor: &Accessor<T, Self>,
        handle: Resource<ConnectionBuilder>,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let (address, state) = accessor.with(|mut access| {
            let view = access.get();
            let address = view.table.get(&handle)?.address.clone();
            wasmtime::Result::<_>::Ok((address, view.state.clone()))
        })?;
        let opened = state
            .open(&address)
            .instrument(tracing::debug_span!("postgres.build_async"))
            .await;
        match opened {
            Ok(connection) => Ok(Ok(
                accessor.with(|mut access| access.get().table.push(connection))?
            )),
            Err(error) => Ok(Err(to_guest_error(error))),
        }
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
         stream them (query-async) or select fewer",
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

/// The one place errors become the interface's variants. Connection
/// failures say what went wrong but never the address, host or password.
fn to_guest_error(error: PgError) -> Error {
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
                Some(pg) => Error::QueryFailed(wit::QueryError::DbError(client::db_error(pg))),
                None => Error::QueryFailed(wit::QueryError::Text(db.message().to_owned())),
            }
        }
        PgError::Query(sqlx::Error::Io(io)) => {
            Error::ConnectionFailed(format!("lost the connection to the server: {io}"))
        }
        PgError::Query(error) => Error::QueryFailed(wit::QueryError::Text(error.to_string())),
        PgError::Interrupted => Error::Other(PgError::Interrupted.to_string()),
        PgError::TooLarge => {
            Error::QueryFailed(wit::QueryError::Text(PgError::TooLarge.to_string()))
        }
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
