//! `spin:mysql/mysql@3.0.0`, the WASI 0.3 interface spin-sdk 7 imports: its
//! types in front of the shared backend; `query` streams its rows.

use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use super::{Connection, DataType, GuestError, InstanceState, MysqlError, Param, Value, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-mysql-v3",
        imports: { default: trappable | tracing },
        with: { "spin:mysql/mysql.connection": crate::capabilities::mysql::Connection },
    });
}

use bindings::spin::mysql::mysql::{
    self as wit, Column, DbDataType, DbValue, Error, ParameterValue, Row,
};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, SpinMysql>(linker, super::view)
}

struct SpinMysql;

impl HasData for SpinMysql {
    type Data<'a> = View<'a, InstanceState>;
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        // The server connection goes back to its pool once no query streams from it.
        self.table.delete(handle)?;
        Ok(())
    }
}

impl<T> wit::HostConnectionWithStore<T> for SpinMysql {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = accessor.with(|mut access| access.get().state.clone());
        let opened = tracing::Instrument::instrument(
            state.open(&address),
            tracing::debug_span!("mysql.open"),
        )
        .await;
        match opened {
            Ok(connection) => {
                accessor.with(|mut access| Ok(Ok(access.get().table.push(connection)?)))
            }
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn query(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
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
        let connection = accessor.with(|mut access| access.get().resource(&this))?;
        let params = params.into_iter().map(to_param).collect();
        let started = tracing::Instrument::instrument(
            connection.query_streaming(statement, params, to_row),
            tracing::debug_span!("mysql.query"),
        )
        .await;
        let (columns, rows, done) = match started {
            Ok(started) => started,
            Err(error) => return Ok(Err(to_guest_error(error))),
        };
        let columns = columns.into_iter().map(to_column).collect();
        let done = async move {
            let outcome = done.await.unwrap_or(Err(MysqlError::Interrupted));
            Ok::<_, wasmtime::Error>(outcome.map_err(to_guest_error))
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, done)?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = accessor.with(|mut access| access.get().resource(&this))?;
        let params = params.into_iter().map(to_param).collect();
        let executed = tracing::Instrument::instrument(
            connection.execute(statement, params),
            tracing::debug_span!("mysql.execute"),
        )
        .await;
        Ok(executed.map_err(to_guest_error))
    }
}

fn to_param(value: ParameterValue) -> Param {
    match value {
        ParameterValue::Boolean(v) => Param::Boolean(v),
        ParameterValue::Int8(v) => Param::Int8(v),
        ParameterValue::Int16(v) => Param::Int16(v),
        ParameterValue::Int32(v) => Param::Int32(v),
        ParameterValue::Int64(v) => Param::Int64(v),
        ParameterValue::Uint8(v) => Param::Uint8(v),
        ParameterValue::Uint16(v) => Param::Uint16(v),
        ParameterValue::Uint32(v) => Param::Uint32(v),
        ParameterValue::Uint64(v) => Param::Uint64(v),
        ParameterValue::Floating32(v) => Param::Floating32(v),
        ParameterValue::Floating64(v) => Param::Floating64(v),
        ParameterValue::Str(v) => Param::Str(v),
        ParameterValue::Binary(v) => Param::Binary(v),
        ParameterValue::DbNull => Param::Null,
    }
}

fn to_row(values: Vec<Value>) -> Row {
    values
        .into_iter()
        .map(|value| match value {
            Value::Int8(v) => DbValue::Int8(v),
            Value::Int16(v) => DbValue::Int16(v),
            Value::Int32(v) => DbValue::Int32(v),
            Value::Int64(v) => DbValue::Int64(v),
            Value::Uint8(v) => DbValue::Uint8(v),
            Value::Uint16(v) => DbValue::Uint16(v),
            Value::Uint32(v) => DbValue::Uint32(v),
            Value::Uint64(v) => DbValue::Uint64(v),
            Value::Floating32(v) => DbValue::Floating32(v),
            Value::Floating64(v) => DbValue::Floating64(v),
            Value::Str(v) => DbValue::Str(v),
            Value::Binary(v) => DbValue::Binary(v),
            Value::Null => DbValue::DbNull,
        })
        .collect()
}

fn to_column(column: super::Column) -> Column {
    let data_type = match column.data_type {
        DataType::Int8 => DbDataType::Int8,
        DataType::Int16 => DbDataType::Int16,
        DataType::Int32 => DbDataType::Int32,
        DataType::Int64 => DbDataType::Int64,
        DataType::Uint8 => DbDataType::Uint8,
        DataType::Uint16 => DbDataType::Uint16,
        DataType::Uint32 => DbDataType::Uint32,
        DataType::Uint64 => DbDataType::Uint64,
        DataType::Floating32 => DbDataType::Floating32,
        DataType::Floating64 => DbDataType::Floating64,
        DataType::Str => DbDataType::Str,
        DataType::Binary => DbDataType::Binary,
        DataType::Other => DbDataType::Other,
    };
    Column {
        name: column.name,
        data_type,
    }
}

fn to_guest_error(error: MysqlError) -> Error {
    match super::to_guest_error(error) {
        GuestError::ConnectionFailed(message) => Error::ConnectionFailed(message),
        GuestError::BadParameter(message) => Error::BadParameter(message),
        GuestError::QueryFailed(message) => Error::QueryFailed(message),
        GuestError::ValueConversionFailed(message) => Error::ValueConversionFailed(message),
        GuestError::Other(message) => Error::Other(message),
    }
}
