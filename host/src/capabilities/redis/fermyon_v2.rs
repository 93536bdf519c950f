//! `fermyon:spin/redis@2.0.0` (Spin 2 apps: spin-sdk 2-6's `redis`): the
//! same calls and error cases as `spin:redis@3.0.0`, synchronous in the WIT.

use wasmtime::component::{HasData, Linker, Resource};

use super::{Argument, Connection, InstanceState, Reply, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-redis;
            world imports {
                import fermyon:spin/redis@2.0.0;
            }
        ",
        world: "spindle:fermyon-redis/imports",
        // Synchronous in the WIT, but every call waits on the server.
        imports: { default: async | trappable | tracing },
        with: { "fermyon:spin/redis@2.0.0.connection": crate::capabilities::redis::Connection },
    });
}

use bindings::fermyon::spin2_0_0::redis::{self as wit, Error, RedisParameter, RedisResult};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, FermyonRedis>(linker, super::view)
}

struct FermyonRedis;

impl HasData for FermyonRedis {
    type Data<'a> = View<'a, InstanceState>;
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

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        match self.state.open(&address).await {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(guest_error(error))),
        }
    }

    async fn publish(
        &mut self,
        this: Resource<Connection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = self.resource(&this)?;
        Ok(connection
            .publish(channel, payload)
            .await
            .map_err(guest_error))
    }

    async fn get(
        &mut self,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.get(key).await.map_err(guest_error))
    }

    async fn set(
        &mut self,
        this: Resource<Connection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.set(key, value).await.map_err(guest_error))
    }

    async fn incr(
        &mut self,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.incr(key).await.map_err(guest_error))
    }

    async fn del(
        &mut self,
        this: Resource<Connection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.del(keys).await.map_err(guest_error))
    }

    async fn sadd(
        &mut self,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.sadd(key, values).await.map_err(guest_error))
    }

    async fn smembers(
        &mut self,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.smembers(key).await.map_err(guest_error))
    }

    async fn srem(
        &mut self,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let connection = self.resource(&this)?;
        Ok(connection.srem(key, values).await.map_err(guest_error))
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        let connection = self.resource(&this)?;
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

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
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
