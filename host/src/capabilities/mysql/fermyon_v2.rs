//! `fermyon:spin/mysql@2.0.0` (with `fermyon:spin/rdbms-types@2.0.0`), the
//! WASI 0.2 interface of Spin 2 and 3 apps (Rust spin-sdk 2–6, the JS,
//! Python and Go SDKs): its types in front of the shared backend; `query`
//! collects its rows, up to the backend's cap.

use wasmtime::component::{HasData, Linker, Resource};

use super::{Connection, DataType, GuestError, InstanceState, MysqlError, Param, Value, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-mysql;
            world imports {
                import fermyon:spin/mysql@2.0.0;
            }
        ",
        world: "spindle:fermyon-mysql/imports",
        // Synchronous in the WIT, but every call waits on the server.
        imports: { default: async | trappable | tracing },
        with: { "fermyon:spin/mysql@2.0.0.connection": crate::capabilities::mysql::Connection },
    });
}

use bindings::fermyon::spin2_0_0::mysql as wit;
use bindings::fermyon::spin2_0_0::rdbms_types::{
    self, Column, DbDataType, DbValue, Error, ParameterValue, RowSet,
};

/// Links the interface (and the types it uses).
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    rdbms_types::add_to_linker::<_, FermyonMysql>(linker, super::view)?;
    wit::add_to_linker::<_, FermyonMysql>(linker, super::view)
}

struct FermyonMysql;

impl HasData for FermyonMysql {
    type Data<'a> = View<'a, InstanceState>;
}

impl rdbms_types::Host for View<'_, InstanceState> {}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = self.state.clone();
        let opened = tracing::Instrument::instrument(
            state.open(&address),
            tracing::debug_span!("mysql.open"),
        )
        .await;
        match opened {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let connection = self.resource(&this)?;
        let params = params.into_iter().map(to_param).collect();
        let result = tracing::Instrument::instrument(
            connection.query(statement, params),
            tracing::debug_span!("mysql.query"),
        )
        .await;
        Ok(match result {
            Ok((columns, rows)) => Ok(RowSet {
                columns: columns.into_iter().map(to_column).collect(),
                rows: rows.into_iter().map(to_row).collect(),
            }),
            Err(error) => Err(to_guest_error(error)),
        })
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = self.resource(&this)?;
        let params = params.into_iter().map(to_param).collect();
        let executed = tracing::Instrument::instrument(
            connection.execute(statement, params),
            tracing::debug_span!("mysql.execute"),
        )
        .await;
        Ok(executed.map_err(to_guest_error))
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
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

fn to_row(values: Vec<Value>) -> Vec<DbValue> {
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
