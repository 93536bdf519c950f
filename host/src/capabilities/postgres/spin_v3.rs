//! `spin:postgres/postgres@3.0.0` (spin-sdk 3.1-6, WASI 0.2): the scalar
//! and date-time types only. Cells of a type it has no case for (UUID, JSON,
//! numeric, ranges, arrays, intervals) come back as `unsupported`, their
//! columns as `other`, as in Spin; a server error is its text.

use tracing::Instrument;
use wasmtime::component::{HasData, Linker, Resource};

use super::{Connection, InstanceState, View, model, query_failure_text, to_guest_error};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:postgres-v3;
            world imports {
                import spin:postgres/postgres@3.0.0;
            }
        ",
        world: "spindle:postgres-v3/imports",
        // Synchronous in the WIT, but every call waits on the server.
        imports: { default: async | trappable | tracing },
        with: {
            "spin:postgres/postgres@3.0.0.connection": crate::capabilities::postgres::Connection,
        },
    });
}

use bindings::spin::postgres3_0_0::postgres::{
    self as wit, Column, DbDataType, DbValue, Error, ParameterValue, RowSet,
};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Postgres>(linker, super::view)
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
        Ok(opened.map_err(guest_error))
    }

    async fn query(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let params = params.into_iter().map(parameter).collect();
        let rows = self
            .run_query(&handle, statement, params)
            .instrument(tracing::debug_span!("postgres.query"))
            .await?;
        Ok(rows.map(row_set).map_err(guest_error))
    }

    async fn execute(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let params = params.into_iter().map(parameter).collect();
        let affected = self
            .run_execute(&handle, statement, params)
            .instrument(tracing::debug_span!("postgres.execute"))
            .await?;
        Ok(affected.map_err(guest_error))
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.close(handle)
    }
}

/// This version's error for what the backend reports.
fn guest_error(error: super::PgError) -> Error {
    match to_guest_error(error) {
        model::Error::ConnectionFailed(message) => Error::ConnectionFailed(message),
        model::Error::BadParameter(message) => Error::BadParameter(message),
        model::Error::QueryFailed(error) => Error::QueryFailed(query_failure_text(error)),
        model::Error::ValueConversionFailed(message) => Error::ValueConversionFailed(message),
        model::Error::Other(message) => Error::Other(message),
    }
}

fn parameter(value: ParameterValue) -> model::ParameterValue {
    use model::ParameterValue as P;
    match value {
        ParameterValue::Boolean(v) => P::Boolean(v),
        ParameterValue::Int8(v) => P::Int8(v),
        ParameterValue::Int16(v) => P::Int16(v),
        ParameterValue::Int32(v) => P::Int32(v),
        ParameterValue::Int64(v) => P::Int64(v),
        ParameterValue::Floating32(v) => P::Floating32(v),
        ParameterValue::Floating64(v) => P::Floating64(v),
        ParameterValue::Str(v) => P::Str(v),
        ParameterValue::Binary(v) => P::Binary(v),
        ParameterValue::Date(v) => P::Date(v),
        ParameterValue::Time(v) => P::Time(v),
        ParameterValue::Datetime(v) => P::Datetime(v),
        ParameterValue::Timestamp(v) => P::Timestamp(v),
        ParameterValue::DbNull => P::DbNull,
    }
}

fn row_set(rows: model::RowSet) -> RowSet {
    RowSet {
        columns: rows
            .columns
            .into_iter()
            .map(|column| Column {
                name: column.name,
                data_type: data_type(column.data_type),
            })
            .collect(),
        rows: rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(value).collect())
            .collect(),
    }
}

fn data_type(data_type: model::DbDataType) -> DbDataType {
    use model::DbDataType as T;
    match data_type {
        T::Boolean => DbDataType::Boolean,
        T::Int8 => DbDataType::Int8,
        T::Int16 => DbDataType::Int16,
        T::Int32 => DbDataType::Int32,
        T::Int64 => DbDataType::Int64,
        T::Floating32 => DbDataType::Floating32,
        T::Floating64 => DbDataType::Floating64,
        T::Str => DbDataType::Str,
        T::Binary => DbDataType::Binary,
        T::Date => DbDataType::Date,
        T::Time => DbDataType::Time,
        T::Datetime => DbDataType::Datetime,
        T::Timestamp => DbDataType::Timestamp,
        T::Uuid
        | T::Jsonb
        | T::Decimal
        | T::RangeInt32
        | T::RangeInt64
        | T::RangeDecimal
        | T::ArrayInt32
        | T::ArrayInt64
        | T::ArrayDecimal
        | T::ArrayStr
        | T::Interval
        | T::Other(_) => DbDataType::Other,
    }
}

fn value(value: model::DbValue) -> DbValue {
    use model::DbValue as V;
    match value {
        V::Boolean(v) => DbValue::Boolean(v),
        V::Int8(v) => DbValue::Int8(v),
        V::Int16(v) => DbValue::Int16(v),
        V::Int32(v) => DbValue::Int32(v),
        V::Int64(v) => DbValue::Int64(v),
        V::Floating32(v) => DbValue::Floating32(v),
        V::Floating64(v) => DbValue::Floating64(v),
        V::Str(v) => DbValue::Str(v),
        V::Binary(v) => DbValue::Binary(v),
        V::Date(v) => DbValue::Date(v),
        V::Time(v) => DbValue::Time(v),
        V::Datetime(v) => DbValue::Datetime(v),
        V::Timestamp(v) => DbValue::Timestamp(v),
        V::DbNull => DbValue::DbNull,
        V::Uuid(_)
        | V::Jsonb(_)
        | V::Decimal(_)
        | V::RangeInt32(_)
        | V::RangeInt64(_)
        | V::RangeDecimal(_)
        | V::ArrayInt32(_)
        | V::ArrayInt64(_)
        | V::ArrayDecimal(_)
        | V::ArrayStr(_)
        | V::Interval(_)
        | V::Unsupported(_) => DbValue::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_is_its_text() {
        let failure = model::QueryError::DbError(model::DbError {
            as_text: "ERROR: relation \"t\" does not exist".into(),
            severity: "ERROR".into(),
            code: "42P01".into(),
            message: "relation \"t\" does not exist".into(),
            detail: None,
            extras: Vec::new(),
        });
        assert_eq!(
            query_failure_text(failure),
            "ERROR: relation \"t\" does not exist"
        );
    }

    #[test]
    fn values_this_version_lacks_are_unsupported() {
        assert!(matches!(
            value(model::DbValue::Uuid("x".into())),
            DbValue::Unsupported
        ));
        assert!(matches!(
            data_type(model::DbDataType::Jsonb),
            DbDataType::Other
        ));
        assert!(matches!(
            value(model::DbValue::Date((2024, 1, 2))),
            DbValue::Date((2024, 1, 2))
        ));
    }
}
