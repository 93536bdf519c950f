//! Conversions between the interface's values and PostgreSQL's: parameters
//! are bound with an explicit type each (the server then applies its usual
//! assignment casts, e.g. `int4` into a `bigint` column), and result cells are
//! decoded by their column's type.
//!
//! Datetimes are UTC throughout: the interface has no time zone, and every
//! session runs with `TimeZone=UTC` (see `address.rs`), so `timestamp` and
//! `timestamptz` convert into each other without shifting.

use std::ops::Bound;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::types::{Oid, PgInterval, PgRange};
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgRow, PgTypeInfo};
use sqlx::{Arguments, Decode, Encode, Postgres, Row, Type, TypeInfo, ValueRef};

use super::ConversionError;
use super::model::{DbDataType, DbValue, Interval, ParameterValue, RangeBoundKind};

/// The guest's parameters, encoded, with the type each declares to the server.
#[derive(Default)]
pub struct Parameters {
    /// The encoded values, in order.
    pub arguments: PgArguments,
    /// The declared type of each value; also what a cached statement is
    /// checked against before it is reused.
    pub types: Vec<PgTypeInfo>,
}

impl Parameters {
    /// Encodes every parameter; the first that cannot be converted is an
    /// error naming its position (`$1` is the first).
    pub fn bind(values: Vec<ParameterValue>) -> Result<Self, ConversionError> {
        let mut parameters = Self::default();
        for (index, value) in values.into_iter().enumerate() {
            parameters
                .push(value)
                .map_err(|reason| ConversionError::Parameter {
                    position: index + 1,
                    reason,
                })?;
        }
        Ok(parameters)
    }

    fn push(&mut self, value: ParameterValue) -> Result<(), String> {
        match value {
            ParameterValue::Boolean(v) => self.add(v),
            // PostgreSQL has no one-byte integer (`"char"` is a character
            // type): the smallest integer type holds it.
            ParameterValue::Int8(v) => self.add(i16::from(v)),
            ParameterValue::Int16(v) => self.add(v),
            ParameterValue::Int32(v) => self.add(v),
            ParameterValue::Int64(v) => self.add(v),
            ParameterValue::Floating32(v) => self.add(v),
            ParameterValue::Floating64(v) => self.add(v),
            ParameterValue::Str(v) => self.add(v),
            ParameterValue::Binary(v) => self.add(v),
            ParameterValue::Date(v) => self.add(date_from_wit(v)?),
            ParameterValue::Time(v) => self.add(time_from_wit(v)?),
            ParameterValue::Datetime(v) => self.add(datetime_from_wit(v)?),
            // Seconds since the Unix epoch, an instant: `timestamptz`, as Spin.
            ParameterValue::Timestamp(seconds) => self.add(
                DateTime::<Utc>::from_timestamp(seconds, 0)
                    .ok_or_else(|| format!("timestamp {seconds} is out of range"))?,
            ),
            ParameterValue::Uuid(v) => {
                self.add(uuid::Uuid::parse_str(&v).map_err(|e| format!("invalid UUID: {e}"))?)
            }
            ParameterValue::Jsonb(v) => self.add(
                serde_json::from_slice::<serde_json::Value>(&v)
                    .map_err(|e| format!("invalid JSON: {e}"))?,
            ),
            ParameterValue::Decimal(v) => self.add(decimal_from_wit(&v)?),
            ParameterValue::RangeInt32((lower, upper)) => self.add(PgRange {
                start: bound_from_wit(lower, Ok)?,
                end: bound_from_wit(upper, Ok)?,
            }),
            ParameterValue::RangeInt64((lower, upper)) => self.add(PgRange {
                start: bound_from_wit(lower, Ok)?,
                end: bound_from_wit(upper, Ok)?,
            }),
            ParameterValue::RangeDecimal((lower, upper)) => self.add(PgRange {
                start: bound_from_wit(lower, |v| decimal_from_wit(&v))?,
                end: bound_from_wit(upper, |v| decimal_from_wit(&v))?,
            }),
            ParameterValue::ArrayInt32(v) => self.add(v),
            ParameterValue::ArrayInt64(v) => self.add(v),
            ParameterValue::ArrayDecimal(v) => self.add(
                v.iter()
                    .map(|d| d.as_deref().map(decimal_from_wit).transpose())
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            ParameterValue::ArrayStr(v) => self.add(v),
            ParameterValue::Interval(Interval {
                micros,
                days,
                months,
            }) => self.add(PgInterval {
                months,
                days,
                microseconds: micros,
            }),
            ParameterValue::DbNull => self.add(Null),
        }
    }

    fn add<T>(&mut self, value: T) -> Result<(), String>
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres>,
    {
        self.types
            .push(value.produces().unwrap_or_else(T::type_info));
        self.arguments.add(value).map_err(|e| e.to_string())
    }
}

/// A NULL of no particular type: declared as "unspecified" (OID 0), so the
/// server infers the type from where the parameter is used.
struct Null;

impl Type<Postgres> for Null {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for Null {
    fn encode_by_ref(
        &self,
        _: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// Whether a statement prepared with `prepared` parameter types can be bound
/// with `declared` ones. A NULL fits any type; anything else must match
/// exactly, or its bytes would be read as another type.
pub fn parameters_fit(prepared: &[PgTypeInfo], declared: &[PgTypeInfo]) -> bool {
    prepared.len() == declared.len()
        && prepared.iter().zip(declared).all(|(prepared, declared)| {
            declared.oid() == Some(Oid(0)) || prepared.oid() == declared.oid()
        })
}

/// The interface's name for a column of type `type_info`.
pub fn data_type(type_info: &PgTypeInfo) -> DbDataType {
    match type_info.name() {
        "BOOL" => DbDataType::Boolean,
        "\"CHAR\"" => DbDataType::Int8,
        "INT2" => DbDataType::Int16,
        "INT4" => DbDataType::Int32,
        "INT8" => DbDataType::Int64,
        "FLOAT4" => DbDataType::Floating32,
        "FLOAT8" => DbDataType::Floating64,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" => DbDataType::Str,
        "BYTEA" => DbDataType::Binary,
        "DATE" => DbDataType::Date,
        "TIME" => DbDataType::Time,
        "TIMESTAMP" | "TIMESTAMPTZ" => DbDataType::Datetime,
        "UUID" => DbDataType::Uuid,
        "JSONB" | "JSON" => DbDataType::Jsonb,
        "NUMERIC" => DbDataType::Decimal,
        "INT4RANGE" => DbDataType::RangeInt32,
        "INT8RANGE" => DbDataType::RangeInt64,
        "NUMRANGE" => DbDataType::RangeDecimal,
        "INT4[]" => DbDataType::ArrayInt32,
        "INT8[]" => DbDataType::ArrayInt64,
        "NUMERIC[]" => DbDataType::ArrayDecimal,
        "TEXT[]" | "VARCHAR[]" | "CHAR[]" | "NAME[]" => DbDataType::ArrayStr,
        "INTERVAL" => DbDataType::Interval,
        other => DbDataType::Other(other.to_ascii_lowercase()),
    }
}

/// Decodes every cell of `row`.
pub fn decode_row(row: &PgRow) -> Result<Vec<DbValue>, ConversionError> {
    (0..row.len())
        .map(|index| decode_cell(row, index))
        .collect()
}

/// Decodes one cell by its column's type; a type the interface has no
/// variant for comes back as its raw (binary format) bytes.
fn decode_cell(row: &PgRow, index: usize) -> Result<DbValue, ConversionError> {
    let raw = row.try_get_raw(index).map_err(|e| ConversionError::Cell {
        index,
        reason: e.to_string(),
    })?;
    if raw.is_null() {
        return Ok(DbValue::DbNull);
    }
    let type_info = raw.type_info().into_owned();
    let cell = Cell { row, index };
    match data_type(&type_info) {
        DbDataType::Boolean => cell.get(DbValue::Boolean),
        DbDataType::Int8 => cell.get(DbValue::Int8),
        DbDataType::Int16 => cell.get(DbValue::Int16),
        DbDataType::Int32 => cell.get(DbValue::Int32),
        DbDataType::Int64 => cell.get(DbValue::Int64),
        DbDataType::Floating32 => cell.get(DbValue::Floating32),
        DbDataType::Floating64 => cell.get(DbValue::Floating64),
        DbDataType::Str => cell.get(DbValue::Str),
        DbDataType::Binary => cell.get(DbValue::Binary),
        DbDataType::Date => cell.get(|v: NaiveDate| DbValue::Date(date_to_wit(v))),
        DbDataType::Time => cell.get(|v: NaiveTime| DbValue::Time(time_to_wit(v))),
        DbDataType::Datetime if type_info.name() == "TIMESTAMPTZ" => {
            cell.get(|v: DateTime<Utc>| DbValue::Datetime(datetime_to_wit(v.naive_utc())))
        }
        DbDataType::Datetime => cell.get(|v: NaiveDateTime| DbValue::Datetime(datetime_to_wit(v))),
        DbDataType::Uuid => cell.get(|v: uuid::Uuid| DbValue::Uuid(v.to_string())),
        DbDataType::Jsonb => cell.get(|v: serde_json::Value| DbValue::Jsonb(v.to_string().into())),
        DbDataType::Decimal => cell.get(|v: Decimal| DbValue::Decimal(v.to_string())),
        DbDataType::RangeInt32 => cell.get(|v: PgRange<i32>| {
            DbValue::RangeInt32((bound_to_wit(v.start, |n| n), bound_to_wit(v.end, |n| n)))
        }),
        DbDataType::RangeInt64 => cell.get(|v: PgRange<i64>| {
            DbValue::RangeInt64((bound_to_wit(v.start, |n| n), bound_to_wit(v.end, |n| n)))
        }),
        DbDataType::RangeDecimal => cell.get(|v: PgRange<Decimal>| {
            let text = |d: Decimal| d.to_string();
            DbValue::RangeDecimal((bound_to_wit(v.start, text), bound_to_wit(v.end, text)))
        }),
        DbDataType::ArrayInt32 => cell.get(DbValue::ArrayInt32),
        DbDataType::ArrayInt64 => cell.get(DbValue::ArrayInt64),
        DbDataType::ArrayDecimal => cell.get(|v: Vec<Option<Decimal>>| {
            DbValue::ArrayDecimal(v.into_iter().map(|d| d.map(|d| d.to_string())).collect())
        }),
        DbDataType::ArrayStr => cell.get(DbValue::ArrayStr),
        DbDataType::Interval => cell.get(|v: PgInterval| {
            DbValue::Interval(Interval {
                micros: v.microseconds,
                days: v.days,
                months: v.months,
            })
        }),
        // `data_type` never says `timestamp`: that is only a parameter's form.
        DbDataType::Timestamp | DbDataType::Other(_) => {
            let bytes = raw.as_bytes().map_err(|e| ConversionError::Cell {
                index,
                reason: e.to_string(),
            })?;
            Ok(DbValue::Unsupported(bytes.to_vec()))
        }
    }
}

/// One non-NULL cell, decoded as a Rust type and wrapped as a `DbValue`.
struct Cell<'r> {
    row: &'r PgRow,
    index: usize,
}

impl<'r> Cell<'r> {
    fn get<T>(&self, wrap: impl FnOnce(T) -> DbValue) -> Result<DbValue, ConversionError>
    where
        T: Decode<'r, Postgres> + Type<Postgres>,
    {
        self.row
            .try_get::<T, _>(self.index)
            .map(wrap)
            .map_err(|e| ConversionError::Cell {
                index: self.index,
                reason: e.to_string(),
            })
    }
}

fn date_from_wit((year, month, day): (i32, u8, u8)) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(year, month.into(), day.into())
        .ok_or_else(|| format!("invalid date {year:04}-{month:02}-{day:02}"))
}

fn time_from_wit((hour, minute, second, nanos): (u8, u8, u8, u32)) -> Result<NaiveTime, String> {
    NaiveTime::from_hms_nano_opt(hour.into(), minute.into(), second.into(), nanos)
        .ok_or_else(|| format!("invalid time {hour:02}:{minute:02}:{second:02}.{nanos:09}"))
}

fn datetime_from_wit(
    (year, month, day, hour, minute, second, nanos): (i32, u8, u8, u8, u8, u8, u32),
) -> Result<NaiveDateTime, String> {
    Ok(NaiveDateTime::new(
        date_from_wit((year, month, day))?,
        time_from_wit((hour, minute, second, nanos))?,
    ))
}

fn decimal_from_wit(text: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(text).map_err(|e| format!("invalid decimal `{text}`: {e}"))
}

fn bound_from_wit<W, T>(
    bound: Option<(W, RangeBoundKind)>,
    convert: impl Fn(W) -> Result<T, String>,
) -> Result<Bound<T>, String> {
    Ok(match bound {
        None => Bound::Unbounded,
        Some((value, RangeBoundKind::Inclusive)) => Bound::Included(convert(value)?),
        Some((value, RangeBoundKind::Exclusive)) => Bound::Excluded(convert(value)?),
    })
}

fn bound_to_wit<T, W>(bound: Bound<T>, convert: impl Fn(T) -> W) -> Option<(W, RangeBoundKind)> {
    match bound {
        Bound::Unbounded => None,
        Bound::Included(value) => Some((convert(value), RangeBoundKind::Inclusive)),
        Bound::Excluded(value) => Some((convert(value), RangeBoundKind::Exclusive)),
    }
}

// chrono's month, day, hour, minute and second always fit in a u8.
fn date_to_wit(date: NaiveDate) -> (i32, u8, u8) {
    (date.year(), date.month() as u8, date.day() as u8)
}

fn time_to_wit(time: NaiveTime) -> (u8, u8, u8, u32) {
    (
        time.hour() as u8,
        time.minute() as u8,
        time.second() as u8,
        time.nanosecond(),
    )
}

fn datetime_to_wit(datetime: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    let (year, month, day) = date_to_wit(datetime.date());
    let (hour, minute, second, nanos) = time_to_wit(datetime.time());
    (year, month, day, hour, minute, second, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(value: ParameterValue) -> String {
        let parameters = Parameters::bind(vec![value]).expect("binds");
        parameters.types[0].name().to_string()
    }

    #[test]
    fn each_parameter_declares_its_postgres_type() {
        assert_eq!(declared(ParameterValue::Int8(1)), "INT2");
        assert_eq!(declared(ParameterValue::Timestamp(0)), "TIMESTAMPTZ");
        assert_eq!(
            declared(ParameterValue::Datetime((2024, 1, 2, 3, 4, 5, 0))),
            "TIMESTAMP"
        );
        assert_eq!(declared(ParameterValue::Jsonb(b"{}".to_vec())), "JSONB");
        assert_eq!(declared(ParameterValue::Decimal("1.5".into())), "NUMERIC");
        assert_eq!(declared(ParameterValue::ArrayStr(vec![None])), "TEXT[]");
        assert_eq!(
            declared(ParameterValue::RangeDecimal((None, None))),
            "NUMRANGE"
        );
    }

    #[test]
    fn bad_parameters_are_reported_by_position() {
        let error = Parameters::bind(vec![
            ParameterValue::Int32(1),
            ParameterValue::Uuid("not-a-uuid".into()),
        ])
        .err()
        .expect("must fail");
        let message = error.to_string();
        assert!(
            message.contains("$2") && message.contains("UUID"),
            "{message}"
        );
    }

    #[test]
    fn impossible_dates_and_decimals_are_rejected() {
        assert!(date_from_wit((2023, 2, 30)).is_err());
        assert!(time_from_wit((24, 0, 0, 0)).is_err());
        assert!(decimal_from_wit("1.2.3").is_err());
    }

    fn type_of<T: Type<Postgres>>() -> PgTypeInfo {
        T::type_info()
    }

    #[test]
    fn null_fits_any_prepared_type_but_others_must_match() {
        let null = PgTypeInfo::with_oid(Oid(0));
        assert!(parameters_fit(&[type_of::<i32>()], &[null]));
        assert!(parameters_fit(&[type_of::<i32>()], &[type_of::<i32>()]));
        assert!(!parameters_fit(&[type_of::<i32>()], &[type_of::<f32>()]));
        assert!(!parameters_fit(&[], &[type_of::<i32>()]));
    }

    #[test]
    fn column_types_map_to_the_interfaces_names() {
        assert!(matches!(data_type(&type_of::<String>()), DbDataType::Str));
        assert!(matches!(
            data_type(&type_of::<DateTime<Utc>>()),
            DbDataType::Datetime
        ));
        assert!(matches!(
            data_type(&type_of::<Vec<i64>>()),
            DbDataType::ArrayInt64
        ));
        assert!(
            matches!(data_type(&PgTypeInfo::with_name("inet")), DbDataType::Other(name) if name == "inet")
        );
    }

    #[test]
    fn datetimes_round_trip_through_the_tuple_form() {
        let tuple = (2024, 2, 29, 23, 59, 58, 123_456_000);
        let datetime = datetime_from_wit(tuple).expect("valid");
        assert_eq!(datetime_to_wit(datetime), tuple);
    }
}
