//! `fermyon:spin/postgres@2.0.0` with its `rdbms-types` (Spin 2 apps:
//! spin-sdk 2-6's `pg`): scalar types only. PostgreSQL has no unsigned
//! integers, so an unsigned parameter binds as the next wider signed type
//! (a `u64` past `i64::MAX` is a bad parameter); cells of a type this
//! version has no case for come back as `unsupported`, their columns as
//! `other`; a server error is its text.

use tracing::Instrument;
use wasmtime::component::{HasData, Linker, Resource};

use super::{
    Connection, ConversionError, InstanceState, PgError, View, model, query_failure_text,
    to_guest_error,
};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-postgres;
            world imports {
                import fermyon:spin/postgres@2.0.0;
            }
        ",
        world: "spindle:fermyon-postgres/imports",
        // Synchronous in the WIT, but every call waits on the server.
        imports: { default: async | trappable | tracing },
        with: {
            "fermyon:spin/postgres@2.0.0.connection": crate::capabilities::postgres::Connection,
        },
    });
}

use bindings::fermyon::spin2_0_0::postgres as wit;
use bindings::fermyon::spin2_0_0::rdbms_types::{
    Column, DbDataType, DbValue, Error, ParameterValue, RowSet,
};

/// Links the interface (`rdbms-types` has only types, nothing to link).
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
        let params = match parameters(params) {
            Ok(params) => params,
            Err(error) => return Ok(Err(guest_error(error))),
        };
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
        let params = match parameters(params) {
            Ok(params) => params,
            Err(error) => return Ok(Err(guest_error(error))),
        };
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
fn guest_error(error: PgError) -> Error {
    match to_guest_error(error) {
        model::Error::ConnectionFailed(message) => Error::ConnectionFailed(message),
        model::Error::BadParameter(message) => Error::BadParameter(message),
        model::Error::QueryFailed(error) => Error::QueryFailed(query_failure_text(error)),
        model::Error::ValueConversionFailed(message) => Error::ValueConversionFailed(message),
        model::Error::Other(message) => Error::Other(message),
    }
}

/// The parameters in the backend's types; the first that has no
/// counterpart is an error naming its position (`$1` is the first).
fn parameters(values: Vec<ParameterValue>) -> Result<Vec<model::ParameterValue>, PgError> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            parameter(value).map_err(|reason| {
                PgError::Conversion(ConversionError::Parameter {
                    position: index + 1,
                    reason,
                })
            })
        })
        .collect()
}

fn parameter(value: ParameterValue) -> Result<model::ParameterValue, String> {
    use model::ParameterValue as P;
    Ok(match value {
        ParameterValue::Boolean(v) => P::Boolean(v),
        ParameterValue::Int8(v) => P::Int8(v),
        ParameterValue::Int16(v) => P::Int16(v),
        ParameterValue::Int32(v) => P::Int32(v),
        ParameterValue::Int64(v) => P::Int64(v),
        ParameterValue::Uint8(v) => P::Int16(v.into()),
        ParameterValue::Uint16(v) => P::Int32(v.into()),
        ParameterValue::Uint32(v) => P::Int64(v.into()),
        ParameterValue::Uint64(v) => {
            P::Int64(i64::try_from(v).map_err(|_| {
                format!("{v} does not fit PostgreSQL's largest integer type (bigint)")
            })?)
        }
        ParameterValue::Floating32(v) => P::Floating32(v),
        ParameterValue::Floating64(v) => P::Floating64(v),
        ParameterValue::Str(v) => P::Str(v),
        ParameterValue::Binary(v) => P::Binary(v),
        ParameterValue::DbNull => P::DbNull,
    })
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
        T::Date
        | T::Time
        | T::Datetime
        | T::Timestamp
        | T::Uuid
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
        V::DbNull => DbValue::DbNull,
        V::Date(_)
        | V::Time(_)
        | V::Datetime(_)
        | V::Timestamp(_)
        | V::Uuid(_)
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
    fn unsigned_parameters_widen_to_a_signed_type_that_holds_them() {
        assert!(matches!(
            parameter(ParameterValue::Uint8(255)),
            Ok(model::ParameterValue::Int16(255))
        ));
        assert!(matches!(
            parameter(ParameterValue::Uint32(u32::MAX)),
            Ok(model::ParameterValue::Int64(v)) if v == i64::from(u32::MAX)
        ));
        assert!(matches!(
            parameter(ParameterValue::Uint64(42)),
            Ok(model::ParameterValue::Int64(42))
        ));
    }

    #[test]
    fn a_u64_past_bigint_is_a_bad_parameter_naming_its_position() {
        let error = parameters(vec![
            ParameterValue::Int32(1),
            ParameterValue::Uint64(u64::MAX),
        ])
        .map(drop)
        .expect_err("must fail");
        assert!(
            matches!(guest_error(error), Error::BadParameter(m) if m.contains("$2") && m.contains("bigint"))
        );
    }

    #[test]
    fn date_times_are_unsupported_in_this_version() {
        assert!(matches!(
            value(model::DbValue::Date((2024, 1, 2))),
            DbValue::Unsupported
        ));
        assert!(matches!(
            data_type(model::DbDataType::Datetime),
            DbDataType::Other
        ));
    }
}
