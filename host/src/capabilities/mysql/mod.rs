//! Outbound MySQL (and MariaDB): `spin:mysql/mysql@3.0.0` (spin-sdk 7,
//! [`spin_v3`]) and `fermyon:spin/mysql@2.0.0` (spin-sdk 2–6,
//! [`fermyon_v2`]) over one backend.
//!
//! Granted by `allowed_outbound_hosts` (`mysql://db:3306`); there is no
//! runtime-config key, since the guest brings its own address
//! (`mysql://user:password@host[:port]/database`). A guest connection holds
//! one pooled server connection for its lifetime, so a transaction it begins
//! stays with it; the pools (one per address) are shared by every instance.
//! Values map as in Spin: integers by width and sign (`TINYINT(1)` is
//! `int8`), `FLOAT`/`DOUBLE`, text as `str`, binary strings and blobs as
//! `binary`; any other column type (dates, decimals, JSON) is `other`, and
//! reading a value of it is `value-conversion-failed`.

mod client;
pub mod fermyon_v2;
pub mod spin_v3;

use std::sync::Arc;

use wasmtime::component::Linker;

use super::View;
use super::allowed_hosts::{AllowedHosts, ByComponent};
use crate::engine;

pub use client::Connection;
use client::Pools;

/// Per app: each component's allow-list and the shared pools.
pub struct AppState {
    allowed_hosts: ByComponent,
    pools: Arc<Pools>,
}

impl AppState {
    /// Takes every component's allow-list; pools open lazily, so no server
    /// needs to be up at start-up.
    pub fn configure(allowed_hosts: &ByComponent) -> Self {
        Self {
            allowed_hosts: allowed_hosts.clone(),
            pools: Arc::default(),
        }
    }

    /// What one instance of `component` may reach.
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
    async fn open(&self, address: &str) -> Result<Connection, MysqlError> {
        let url = url::Url::parse(address).map_err(|_| MysqlError::InvalidAddress)?;
        let host = url.host_str().unwrap_or_default();
        if url.scheme() != "mysql" || host.is_empty() {
            return Err(MysqlError::InvalidAddress);
        }
        if !self.allowed_hosts.allows("mysql", host, url.port()) {
            tracing::warn!(
                host,
                port = url.port(),
                "mysql connection denied: not in allowed_outbound_hosts"
            );
            return Err(MysqlError::AccessDenied);
        }
        self.pools.connect(address).await
    }
}

/// Links both interface versions.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    spin_v3::add_to_linker(linker)?;
    fermyon_v2::add_to_linker(linker)
}

fn view(state: &mut engine::InstanceState) -> View<'_, InstanceState> {
    View {
        table: &mut state.table,
        state: &mut state.mysql,
    }
}

/// A parameter of a statement, whichever interface it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// `boolean`
    Boolean(bool),
    /// `int8`
    Int8(i8),
    /// `int16`
    Int16(i16),
    /// `int32`
    Int32(i32),
    /// `int64`
    Int64(i64),
    /// `uint8`
    Uint8(u8),
    /// `uint16`
    Uint16(u16),
    /// `uint32`
    Uint32(u32),
    /// `uint64`
    Uint64(u64),
    /// `floating32`
    Floating32(f32),
    /// `floating64`
    Floating64(f64),
    /// `str`
    Str(String),
    /// `binary`
    Binary(Vec<u8>),
    /// `db-null`
    Null,
}

/// A result value, whichever interface it goes to. There is no
/// `unsupported`: as in Spin, a value of another type fails the query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `int8` (also `TINYINT(1)`, MySQL's `BOOLEAN`)
    Int8(i8),
    /// `int16`
    Int16(i16),
    /// `int32` (`INT`, `MEDIUMINT`)
    Int32(i32),
    /// `int64`
    Int64(i64),
    /// `uint8`
    Uint8(u8),
    /// `uint16`
    Uint16(u16),
    /// `uint32`
    Uint32(u32),
    /// `uint64`
    Uint64(u64),
    /// `floating32`
    Floating32(f32),
    /// `floating64`
    Floating64(f64),
    /// `str`
    Str(String),
    /// `binary`
    Binary(Vec<u8>),
    /// `db-null`
    Null,
}

/// A column's type as the interfaces name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `int8`
    Int8,
    /// `int16`
    Int16,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `uint8`
    Uint8,
    /// `uint16`
    Uint16,
    /// `uint32`
    Uint32,
    /// `uint64`
    Uint64,
    /// `floating32`
    Floating32,
    /// `floating64`
    Floating64,
    /// `str`
    Str,
    /// `binary`
    Binary,
    /// `other`: dates, times, decimals, JSON, enums, sets, bits, geometry.
    Other,
}

/// A result column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// As the server names it (the alias, if the statement gives one).
    pub name: String,
    /// How its values are carried.
    pub data_type: DataType,
}

/// Why a call failed, before it becomes an interface's error.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// Not a `mysql://` URL with a host, or settings the driver refuses.
    #[error("the address must be a mysql://user:password@host[:port]/database URL")]
    InvalidAddress,
    /// `allowed_outbound_hosts` does not include the address.
    #[error("access denied: the component's allowed_outbound_hosts does not include this address")]
    AccessDenied,
    /// The guest named more distinct addresses than the host keeps pools for.
    #[error("too many distinct database addresses")]
    TooManyAddresses,
    /// No server connection could be had.
    #[error("connecting: {0}")]
    Connect(#[source] sqlx::Error),
    /// The server (or the connection to it) failed the statement.
    #[error("query: {0}")]
    Query(#[source] sqlx::Error),
    /// A result value has no counterpart in the interface.
    #[error("column {index} (`{name}`): {reason}")]
    Conversion {
        /// 0-based column index.
        index: usize,
        /// The column's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A streaming query's task ended without reporting its outcome.
    #[error("the query ended unexpectedly")]
    Interrupted,
    /// The rows of a collected (not streamed) query outgrew the cap.
    #[error(
        "the query's rows exceed {} MiB, the most one query may return; select fewer",
        client::MAX_RESULT_BYTES >> 20
    )]
    TooLarge,
}

/// What the interfaces' shared `error` variant carries, in words that never
/// quote the address or password; each version file builds its own type
/// from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// `connection-failed`
    ConnectionFailed(String),
    /// `bad-parameter`
    BadParameter(String),
    /// `query-failed`
    QueryFailed(String),
    /// `value-conversion-failed`
    ValueConversionFailed(String),
    /// `other`
    Other(String),
}

/// The one place failures become the interfaces' variants: as in Spin, a
/// denied or unusable address is `connection-failed`.
fn to_guest_error(error: MysqlError) -> GuestError {
    match error {
        MysqlError::InvalidAddress | MysqlError::AccessDenied | MysqlError::TooManyAddresses => {
            GuestError::ConnectionFailed(error.to_string())
        }
        MysqlError::Connect(error) => GuestError::ConnectionFailed(match &error {
            sqlx::Error::Database(db) => server_error(db.as_ref()),
            sqlx::Error::Io(io) => format!("could not reach the server: {io}"),
            sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
            sqlx::Error::Configuration(_) => MysqlError::InvalidAddress.to_string(),
            sqlx::Error::Tls(_) => "TLS connections are not supported by this host".into(),
            other => other.to_string(),
        }),
        MysqlError::Query(sqlx::Error::Database(db)) => {
            GuestError::QueryFailed(server_error(db.as_ref()))
        }
        MysqlError::Query(sqlx::Error::Io(io)) => {
            GuestError::ConnectionFailed(format!("lost the connection to the server: {io}"))
        }
        MysqlError::Query(error) => GuestError::QueryFailed(error.to_string()),
        MysqlError::Conversion { .. } => GuestError::ValueConversionFailed(error.to_string()),
        MysqlError::Interrupted | MysqlError::TooLarge => GuestError::Other(error.to_string()),
    }
}

/// The server's message with its error number and SQLSTATE.
fn server_error(error: &dyn sqlx::error::DatabaseError) -> String {
    match error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        Some(mysql) => match mysql.code() {
            Some(state) => format!("ERROR {} ({state}): {}", mysql.number(), mysql.message()),
            None => format!("ERROR {}: {}", mysql.number(), mysql.message()),
        },
        None => error.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(allowed: &[&str]) -> InstanceState {
        let hosts = AllowedHosts::parse(allowed).expect("valid allow-list");
        let by_component = ByComponent::from([("c".to_owned(), Arc::new(hosts))]);
        AppState::configure(&by_component).instance_state("c")
    }

    #[tokio::test]
    async fn address_outside_the_allow_list_is_connection_failed() {
        let state = instance(&["mysql://db.internal:3306"]);
        for address in [
            "mysql://root@127.0.0.1:3306/test",
            "mysql://root@db.internal:3307/test",
        ] {
            let error = state.open(address).await.err().expect("denied");
            assert!(matches!(error, MysqlError::AccessDenied), "{error}");
            let GuestError::ConnectionFailed(message) = to_guest_error(error) else {
                panic!("not connection-failed");
            };
            assert!(!message.contains("db.internal"), "{message}");
        }
    }

    #[tokio::test]
    async fn address_that_is_not_a_mysql_url_is_connection_failed() {
        let state = instance(&["*://*:*"]);
        for address in ["postgres://127.0.0.1/test", "not a url", "mysql:///test"] {
            let error = state.open(address).await.err().expect("refused");
            assert!(matches!(error, MysqlError::InvalidAddress), "{address}");
        }
    }

    #[tokio::test]
    async fn unreachable_server_is_connection_failed_without_the_address() {
        let state = instance(&["mysql://127.0.0.1:1"]);
        let error = state
            .open("mysql://root:secret@127.0.0.1:1/test")
            .await
            .err()
            .expect("nothing listens on port 1");
        let GuestError::ConnectionFailed(message) = to_guest_error(error) else {
            panic!("not connection-failed");
        };
        assert!(
            !message.contains("secret") && !message.contains("127.0.0.1"),
            "{message}"
        );
    }
}
