//! `spin:redis/redis@3.0.0` (spin-sdk 7, WASI 0.3): every call is an async
//! function, run on the shared connection without holding the store.

use wasmtime::component::{Accessor, HasData, Linker, Resource};

use super::{Argument, Connection, InstanceState, Reply, View};
use crate::engine;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-redis",
        imports: { default: trappable | tracing },
        with: { "spin:redis/redis.connection": crate::capabilities::redis::Connection },
    });
}

use bindings::spin::redis::redis::{self as wit, Error, RedisParameter, RedisResult};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Redis>(linker, super::view)
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

/// The connection behind `handle`, to run one command on; a handle not in
/// the table traps.
fn connection<T>(
    accessor: &Accessor<T, Redis>,
    handle: &Resource<Connection>,
) -> wasmtime::Result<Connection> {
    accessor.with(|mut access| access.get().resource(handle))
}

/// This version's error; the backend's has the same cases.
fn guest_error(error: super::Error) -> Error {
    match error {
        super::Error::InvalidAddress => Error::InvalidAddress,
        super::Error::TooManyConnections => Error::TooManyConnections,
        super::Error::TypeError => Error::TypeError,
        super::Error::Other(message) => Error::Other(message),
    }
}

impl<T> wit::HostConnectionWithStore<T> for Redis {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = accessor.with(|mut access| access.get().state.clone());
        match state.open(&address).await {
            Ok(connection) => {
                accessor.with(|mut access| Ok(Ok(access.get().table.push(connection)?)))
            }
            Err(error) => Ok(Err(guest_error(error))),
        }
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection
            .publish(channel, payload)
            .await
            .map_err(guest_error))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.get(key).await.map_err(guest_error))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.set(key, value).await.map_err(guest_error))
    }

    async fn incr(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.incr(key).await.map_err(guest_error))
    }

    async fn del(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.del(keys).await.map_err(guest_error))
    }

    async fn sadd(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.sadd(key, values).await.map_err(guest_error))
    }

    async fn smembers(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.smembers(key).await.map_err(guest_error))
    }

    async fn srem(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = connection(accessor, &this)?;
        Ok(connection.srem(key, values).await.map_err(guest_error))
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        let connection = connection(accessor, &this)?;
        let arguments = arguments
            .into_iter()
            .map(|argument| match argument {
                RedisParameter::Int64(value) => Argument::Int64(value),
                RedisParameter::Binary(bytes) => Argument::Binary(bytes),
            })
            .collect();
        let replies = connection.execute(command, arguments).await;
        Ok(replies
            .map(|replies| replies.into_iter().map(result).collect())
            .map_err(guest_error))
    }
}

fn result(reply: Reply) -> RedisResult {
    match reply {
        Reply::Nil => RedisResult::Nil,
        Reply::Status(status) => RedisResult::Status(status),
        Reply::Int64(number) => RedisResult::Int64(number),
        Reply::Binary(bytes) => RedisResult::Binary(bytes),
    }
}
