//! `spin:postgres/postgres@4.0.0` (spin-sdk 4-6, WASI 0.2): the same types
//! as 4.2 without the connection builder and the streaming functions, so
//! every value and error maps one to one.

use tracing::Instrument;
use wasmtime::component::{HasData, Linker, Resource};

use super::{Connection, InstanceState, View, model, to_guest_error};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:postgres-v4-0;
            world imports {
                import spin:postgres/postgres@4.0.0;
            }
        ",
        world: "spindle:postgres-v4-0/imports",
        // Synchronous in the WIT, but every call waits on the server.
        imports: { default: async | trappable | tracing },
        with: {
            "spin:postgres/postgres@4.0.0.connection": crate::capabilities::postgres::Connection,
        },
    });
}

use bindings::spin::postgres4_0_0::postgres::{
    self as wit, Column, DbDataType, DbError, DbValue, Error, Interval, ParameterValue, QueryError,
    RangeBoundKind, RowSet,
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
        model::Error::QueryFailed(model::QueryError::Text(message)) => {
            Error::QueryFailed(QueryError::Text(message))
        }
        model::Error::QueryFailed(model::QueryError::DbError(error)) => {
            Error::QueryFailed(QueryError::DbError(DbError {
                as_text: error.as_text,
                severity: error.severity,
                code: error.code,
                message: error.message,
                detail: error.detail,
                extras: error.extras,
            }))
        }
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
        ParameterValue::Uuid(v) => P::Uuid(v),
        ParameterValue::Jsonb(v) => P::Jsonb(v),
        ParameterValue::Decimal(v) => P::Decimal(v),
        ParameterValue::RangeInt32((lower, upper)) => {
            P::RangeInt32((bound_to_model(lower), bound_to_model(upper)))
        }
        ParameterValue::RangeInt64((lower, upper)) => {
            P::RangeInt64((bound_to_model(lower), bound_to_model(upper)))
        }
        ParameterValue::RangeDecimal((lower, upper)) => {
            P::RangeDecimal((bound_to_model(lower), bound_to_model(upper)))
        }
        ParameterValue::ArrayInt32(v) => P::ArrayInt32(v),
        ParameterValue::ArrayInt64(v) => P::ArrayInt64(v),
        ParameterValue::ArrayDecimal(v) => P::ArrayDecimal(v),
        ParameterValue::ArrayStr(v) => P::ArrayStr(v),
        ParameterValue::Interval(Interval {
            micros,
            days,
            months,
        }) => P::Interval(model::Interval {
            micros,
            days,
            months,
        }),
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
        T::Uuid => DbDataType::Uuid,
        T::Jsonb => DbDataType::Jsonb,
        T::Decimal => DbDataType::Decimal,
        T::RangeInt32 => DbDataType::RangeInt32,
        T::RangeInt64 => DbDataType::RangeInt64,
        T::RangeDecimal => DbDataType::RangeDecimal,
        T::ArrayInt32 => DbDataType::ArrayInt32,
        T::ArrayInt64 => DbDataType::ArrayInt64,
        T::ArrayDecimal => DbDataType::ArrayDecimal,
        T::ArrayStr => DbDataType::ArrayStr,
        T::Interval => DbDataType::Interval,
        T::Other(name) => DbDataType::Other(name),
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
        V::Uuid(v) => DbValue::Uuid(v),
        V::Jsonb(v) => DbValue::Jsonb(v),
        V::Decimal(v) => DbValue::Decimal(v),
        V::RangeInt32((lower, upper)) => {
            DbValue::RangeInt32((bound_from_model(lower), bound_from_model(upper)))
        }
        V::RangeInt64((lower, upper)) => {
            DbValue::RangeInt64((bound_from_model(lower), bound_from_model(upper)))
        }
        V::RangeDecimal((lower, upper)) => {
            DbValue::RangeDecimal((bound_from_model(lower), bound_from_model(upper)))
        }
        V::ArrayInt32(v) => DbValue::ArrayInt32(v),
        V::ArrayInt64(v) => DbValue::ArrayInt64(v),
        V::ArrayDecimal(v) => DbValue::ArrayDecimal(v),
        V::ArrayStr(v) => DbValue::ArrayStr(v),
        V::Interval(model::Interval {
            micros,
            days,
            months,
        }) => DbValue::Interval(Interval {
            micros,
            days,
            months,
        }),
        V::DbNull => DbValue::DbNull,
        V::Unsupported(bytes) => DbValue::Unsupported(bytes),
    }
}

fn bound_to_model<T>(bound: Option<(T, RangeBoundKind)>) -> Option<(T, model::RangeBoundKind)> {
    bound.map(|(value, kind)| {
        let kind = match kind {
            RangeBoundKind::Inclusive => model::RangeBoundKind::Inclusive,
            RangeBoundKind::Exclusive => model::RangeBoundKind::Exclusive,
        };
        (value, kind)
    })
}

fn bound_from_model<T>(bound: Option<(T, model::RangeBoundKind)>) -> Option<(T, RangeBoundKind)> {
    bound.map(|(value, kind)| {
        let kind = match kind {
            model::RangeBoundKind::Inclusive => RangeBoundKind::Inclusive,
            model::RangeBoundKind::Exclusive => RangeBoundKind::Exclusive,
        };
        (value, kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_parameter_is_bad_parameter_naming_its_position() {
        let error = super::super::PgError::Conversion(super::super::ConversionError::Parameter {
            position: 2,
            reason: "bad".into(),
        });
        assert!(matches!(guest_error(error), Error::BadParameter(m) if m.contains("$2")));
    }

    #[test]
    fn ranges_keep_their_bound_kinds() {
        let parameter = parameter(ParameterValue::RangeInt32((
            Some((1, RangeBoundKind::Inclusive)),
            Some((5, RangeBoundKind::Exclusive)),
        )));
        assert!(matches!(
            parameter,
            model::ParameterValue::RangeInt32((
                Some((1, model::RangeBoundKind::Inclusive)),
                Some((5, model::RangeBoundKind::Exclusive))
            ))
        ));
    }
}
