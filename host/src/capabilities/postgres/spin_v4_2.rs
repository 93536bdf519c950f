//! `spin:postgres/postgres@4.2.0` (spin-sdk 7, WASI 0.3): the backend's own
//! types, plus `connection-builder` and the `-async` functions, whose rows
//! stream to the guest instead of being collected first.

use tracing::Instrument;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use super::{AddressError, Connection, InstanceState, PgError, View, to_guest_error};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-pg",
        // The synchronous functions wait on the network too.
        imports: { default: async | trappable | tracing },
        with: {
            "spin:postgres/postgres.connection": crate::capabilities::postgres::Connection,
            "spin:postgres/postgres.connection-builder":
                crate::capabilities::postgres::spin_v4_2::ConnectionBuilder,
        },
    });
}

/// The interface's generated types, which the backend speaks.
pub(super) use bindings::spin::postgres::postgres as wit;

use wit::{Column, Error, ParameterValue, Row, RowSet};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Postgres>(linker, super::view)
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
        let opened = self
            .open_connection(&address)
            .instrument(tracing::debug_span!("postgres.open"))
            .await?;
        Ok(opened.map_err(to_guest_error))
    }

    async fn query(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let rows = self
            .run_query(&handle, statement, params)
            .instrument(tracing::debug_span!("postgres.query"))
            .await?;
        Ok(rows.map_err(to_guest_error))
    }

    async fn execute(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let affected = self
            .run_execute(&handle, statement, params)
            .instrument(tracing::debug_span!("postgres.execute"))
            .await?;
        Ok(affected.map_err(to_guest_error))
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.close(handle)
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
        let opened = self
            .open_connection(&address)
            .instrument(tracing::debug_span!("postgres.build"))
            .await?;
        Ok(opened.map_err(to_guest_error))
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
