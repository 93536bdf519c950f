//! Outbound Redis, to servers `allowed_outbound_hosts` allows
//! (`redis://host:port`, `rediss://...`), behind `spin:redis/redis@3.0.0`
//! (spin-sdk 7, WASI 0.3) and `fermyon:spin/redis@2.0.0` (Spin 2 apps). This
//! module is the backend; each version's file only translates its types.
//!
//! One multiplexed connection per address, shared by every instance and
//! reconnecting by itself; a guest cycling through addresses cannot make the
//! host hold more than [`MAX_ADDRESSES`]. A denied or malformed address is
//! the interface's `invalid-address` (as in Spin), an unreachable server
//! `other` with a reason that never quotes the address.

mod fermyon_v2;
mod spin_v3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wasmtime::component::Linker;

use super::View;
use super::allowed_hosts::AllowedHosts;
use crate::engine;

/// `spin:redis/redis@3.0.0`'s bindings, which the Redis trigger's own
/// bindings reuse for the types its export shares with them.
pub(crate) use spin_v3::bindings;

/// Distinct server addresses the host keeps connections to at most.
const MAX_ADDRESSES: usize = 64;

/// How long connecting, or one command, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Per app: each component's allow-list and the shared connections.
pub struct AppState {
    allowed_hosts: HashMap<String, Arc<AllowedHosts>>,
    connections: Arc<Mutex<HashMap<String, ConnectionManager>>>,
}

impl AppState {
    /// Takes every component's allow-list; connections open when a guest
    /// first asks.
    pub fn configure(allowed_hosts: &crate::capabilities::allowed_hosts::ByComponent) -> Self {
        Self {
            allowed_hosts: allowed_hosts.clone(),
            connections: Arc::default(),
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
            connections: self.connections.clone(),
        }
    }
}

/// One instance's view: its allow-list and the app's connections.
#[derive(Clone)]
pub struct InstanceState {
    allowed_hosts: Arc<AllowedHosts>,
    connections: Arc<Mutex<HashMap<String, ConnectionManager>>>,
}

/// A connection the guest opened: the host side of every version's
/// `connection` resource (a handle on the shared, multiplexed connection).
#[derive(Clone)]
pub struct Connection(ConnectionManager);

/// Why a call failed: the cases every version's `error` has.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Malformed, or not in `allowed_outbound_hosts`.
    #[error("invalid address")]
    InvalidAddress,
    /// The host keeps connections to no more addresses.
    #[error("too many connections")]
    TooManyConnections,
    /// The reply is not of the type the call returns.
    #[error("type error")]
    TypeError,
    /// Anything else, in words that never quote the address.
    #[error("{0}")]
    Other(String),
}

/// An argument of `execute`.
pub enum Argument {
    /// Sent as its decimal text.
    Int64(i64),
    /// Sent as is.
    Binary(Vec<u8>),
}

/// One value of `execute`'s reply.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// No value.
    Nil,
    /// A status such as `OK`.
    Status(String),
    /// An integer.
    Int64(i64),
    /// A bulk string.
    Binary(Vec<u8>),
}

impl InstanceState {
    /// Checks `address` against the allow-list and hands out the shared
    /// connection to it.
    async fn open(&self, address: &str) -> Result<Connection, Error> {
        if !self.permitted(address) {
            tracing::debug!("redis address refused: not in allowed_outbound_hosts, or malformed");
            return Err(Error::InvalidAddress);
        }
        self.connect(address).await.map(Connection)
    }

    /// Whether `address` is a Redis URL the allow-list allows.
    fn permitted(&self, address: &str) -> bool {
        let Some(url) = redis::parse_redis_url(address) else {
            return false;
        };
        let port = url.port().unwrap_or(6379);
        url.host_str()
            .is_some_and(|host| self.allowed_hosts.allows(url.scheme(), host, Some(port)))
    }

    /// The shared connection to `address`, made on first use.
    async fn connect(&self, address: &str) -> Result<ConnectionManager, Error> {
        let existing = self.lock().get(address).cloned();
        if let Some(connection) = existing {
            return Ok(connection);
        }
        if self.lock().len() >= MAX_ADDRESSES {
            return Err(Error::TooManyConnections);
        }
        let client = redis::Client::open(address).map_err(|_| Error::InvalidAddress)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| {
                Error::Other(format!(
                    "cannot connect to the Redis server: {}",
                    error.category()
                ))
            })?;
        Ok(self
            .lock()
            .entry(address.to_owned())
            .or_insert(connection)
            .clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectionManager>> {
        // A plain map of handles: a poisoned one is still usable.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Links every version of the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    spin_v3::add_to_linker(linker)?;
    fermyon_v2::add_to_linker(linker)
}

fn view(state: &mut engine::InstanceState) -> View<'_, InstanceState> {
    View {
        table: &mut state.table,
        state: &mut state.redis,
    }
}

/// The commands, one per interface function.
impl Connection {
    /// `PUBLISH channel payload`.
    pub async fn publish(&self, channel: String, payload: Vec<u8>) -> Result<(), Error> {
        self.run::<i64>(redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
            .map(drop)
    }

    /// `GET key`.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    /// `SET key value`.
    pub async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.run(redis::cmd("SET").arg(key).arg(value)).await
    }

    /// `INCR key`.
    pub async fn incr(&self, key: String) -> Result<i64, Error> {
        self.run(redis::cmd("INCR").arg(key)).await
    }

    /// `DEL key...`: how many existed.
    pub async fn del(&self, keys: Vec<String>) -> Result<u32, Error> {
        self.run(redis::cmd("DEL").arg(keys)).await
    }

    /// `SADD key value...`: how many were new.
    pub async fn sadd(&self, key: String, values: Vec<String>) -> Result<u32, Error> {
        self.run(redis::cmd("SADD").arg(key).arg(values)).await
    }

    /// `SMEMBERS key`.
    pub async fn smembers(&self, key: String) -> Result<Vec<String>, Error> {
        self.run(redis::cmd("SMEMBERS").arg(key)).await
    }

    /// `SREM key value...`: how many were there.
    pub async fn srem(&self, key: String, values: Vec<String>) -> Result<u32, Error> {
        self.run(redis::cmd("SREM").arg(key).arg(values)).await
    }

    /// Any command, its reply flattened into the interface's list.
    pub async fn execute(
        &self,
        command: String,
        arguments: Vec<Argument>,
    ) -> Result<Vec<Reply>, Error> {
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                Argument::Int64(value) => cmd.arg(value),
                Argument::Binary(bytes) => cmd.arg(bytes),
            };
        }
        let reply: redis::Value = self.run(&cmd).await?;
        results(reply)
    }

    /// Runs `command` and converts its reply, or the failure, for the guest.
    async fn run<R: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<R, Error> {
        // A clone is a handle on the same multiplexed connection.
        let mut connection = self.0.clone();
        command
            .query_async(&mut connection)
            .await
            .map_err(to_guest_error)
    }
}

/// A reply as the interface's flat list of results: an array becomes its
/// elements (nested arrays are flattened), anything else one result.
fn results(reply: redis::Value) -> Result<Vec<Reply>, Error> {
    let mut flat = Vec::new();
    flatten(reply, &mut flat)?;
    Ok(flat)
}

fn flatten(value: redis::Value, into: &mut Vec<Reply>) -> Result<(), Error> {
    use redis::Value;
    match value {
        Value::Nil => into.push(Reply::Nil),
        Value::Okay => into.push(Reply::Status("OK".into())),
        Value::SimpleString(status) => into.push(Reply::Status(status)),
        Value::Int(number) => into.push(Reply::Int64(number)),
        Value::BulkString(bytes) => into.push(Reply::Binary(bytes)),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                flatten(item, into)?;
            }
        }
        Value::Boolean(flag) => into.push(Reply::Int64(i64::from(flag))),
        Value::Double(number) => into.push(Reply::Binary(number.to_string().into_bytes())),
        Value::VerbatimString { text, .. } => into.push(Reply::Binary(text.into_bytes())),
        Value::ServerError(error) => {
            return Err(Error::Other(format!(
                "{} {}",
                error.code(),
                error.details().unwrap_or_default()
            )));
        }
        _ => return Err(Error::TypeError),
    }
    Ok(())
}

/// The server's own words for its errors; a reply of another type than the
/// call expects is `type-error`; nothing quotes the address.
fn to_guest_error(error: redis::RedisError) -> Error {
    if error.kind() == redis::ErrorKind::UnexpectedReturnType {
        return Error::TypeError;
    }
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => Error::Other(format!("{code} {detail}")),
        (Some(code), None) => Error::Other(code.to_owned()),
        _ if error.is_timeout() => Error::Other("the Redis server did not answer in time".into()),
        _ => Error::Other(format!("the Redis call failed: {}", error.category())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_replies_flatten_in_order() {
        let reply = redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::Array(vec![
                redis::Value::BulkString(b"a".to_vec()),
                redis::Value::Nil,
            ]),
            redis::Value::Okay,
        ]);
        assert_eq!(
            results(reply),
            Ok(vec![
                Reply::Int64(1),
                Reply::Binary(b"a".to_vec()),
                Reply::Nil,
                Reply::Status("OK".into()),
            ])
        );
    }

    #[test]
    fn a_component_without_grants_may_reach_no_server() {
        let state = AppState::configure(&HashMap::new()).instance_state("c");
        assert!(!state.permitted("redis://127.0.0.1:6379"));
        assert!(!state.permitted("not a url"));
    }
}
