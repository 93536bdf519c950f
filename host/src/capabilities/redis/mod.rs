//! `spin:redis/redis@3.0.0`: outbound Redis, to servers
//! `allowed_outbound_hosts` allows (`redis://host:port`, `rediss://...`).
//!
//! One multiplexed connection per address, shared by every instance and
//! reconnecting by itself; a guest cycling through addresses cannot make the
//! host hold more than [`MAX_ADDRESSES`]. A denied or malformed address is
//! the interface's `invalid-address` (as in Spin), an unreachable server
//! `other` with a reason that never quotes the address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wasmtime::component::{Accessor, HasData, Linker, Resource};

use super::View;
use super::allowed_hosts::AllowedHosts;
use crate::engine;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-redis",
        imports: { default: trappable | tracing },
        with: { "spin:redis/redis.connection": super::Connection },
    });
}

use bindings::spin::redis::redis::{self as wit, Error, RedisParameter, RedisResult};

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

/// A connection the guest opened: the host side of the `connection`
/// resource (a handle on the shared, multiplexed connection).
#[derive(Clone)]
pub struct Connection(ConnectionManager);

impl InstanceState {
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

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Redis>(linker, |state| View {
        table: &mut state.table,
        state: &mut state.redis,
    })
}

struct Redis;

impl HasData for Redis {
    type Data<'a> = View<'a, InstanceState>;
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

/// The connection behind `handle`, to run one command on.
fn connection<T>(
    accessor: &Accessor<T, Redis>,
    handle: &Resource<Connection>,
) -> wasmtime::Result<ConnectionManager> {
    accessor.with(|mut access| Ok(access.get().table.get(handle)?.0.clone()))
}

/// Runs `command` and converts its reply, or the failure, for the guest.
async fn run<R: redis::FromRedisValue>(
    mut connection: ConnectionManager,
    command: &redis::Cmd,
) -> Result<R, Error> {
    command
        .query_async(&mut connection)
        .await
        .map_err(to_guest_error)
}

impl<T> wit::HostConnectionWithStore<T> for Redis {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = accessor.with(|mut access| access.get().state.clone());
        if !state.permitted(&address) {
            tracing::debug!("redis address refused: not in allowed_outbound_hosts, or malformed");
            return Ok(Err(Error::InvalidAddress));
        }
        let connection = match state.connect(&address).await {
            Ok(connection) => connection,
            Err(error) => return Ok(Err(error)),
        };
        accessor.with(|mut access| Ok(Ok(access.get().table.push(Connection(connection))?)))
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = connection(accessor, &this)?;
        let command = redis::cmd("PUBLISH").arg(channel).arg(payload).clone();
        Ok(run::<i64>(connection, &command).await.map(drop))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("GET").arg(key)).await)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("SET").arg(key).arg(value)).await)
    }

    async fn incr(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("INCR").arg(key)).await)
    }

    async fn del(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("DEL").arg(keys)).await)
    }

    async fn sadd(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("SADD").arg(key).arg(values)).await)
    }

    async fn smembers(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("SMEMBERS").arg(key)).await)
    }

    async fn srem(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(run(connection, redis::cmd("SREM").arg(key).arg(values)).await)
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        let connection = connection(accessor, &this)?;
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(value) => cmd.arg(value),
                RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        let reply: redis::Value = match run(connection, &cmd).await {
            Ok(reply) => reply,
            Err(error) => return Ok(Err(error)),
        };
        Ok(results(reply))
    }
}

/// A reply as the interface's flat list of results: an array becomes its
/// elements (nested arrays are flattened), anything else one result.
fn results(reply: redis::Value) -> Result<Vec<RedisResult>, Error> {
    let mut flat = Vec::new();
    flatten(reply, &mut flat)?;
    Ok(flat)
}

fn flatten(value: redis::Value, into: &mut Vec<RedisResult>) -> Result<(), Error> {
    use redis::Value;
    match value {
        Value::Nil => into.push(RedisResult::Nil),
        Value::Okay => into.push(RedisResult::Status("OK".into())),
        Value::SimpleString(status) => into.push(RedisResult::Status(status)),
        Value::Int(number) => into.push(RedisResult::Int64(number)),
        Value::BulkString(bytes) => into.push(RedisResult::Binary(bytes)),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                flatten(item, into)?;
            }
        }
        Value::Boolean(flag) => into.push(RedisResult::Int64(i64::from(flag))),
        Value::Double(number) => into.push(RedisResult::Binary(number.to_string().into_bytes())),
        Value::VerbatimString { text, .. } => into.push(RedisResult::Binary(text.into_bytes())),
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
