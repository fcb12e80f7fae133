//! One row type per table: a struct declared once with [`table_row!`] from its field list (field name =
//! column name), and one Arrow encoder and decoder generated from it. Writers build batches with
//! [`Row::to_batch`]; readers decode what Delta or DataFusion hands back with [`Row::from_batch`], by column
//! name, whatever physical layout a logical type arrives in (Utf8View or LargeUtf8 text, dictionary-encoded
//! columns, a decimal at another scale). Each value is decoded with its type: money exact or refused,
//! instants and days as chrono values, enums through [`Text`]. A value that cannot be decoded is an error
//! naming the table, the row's key and the column, never skipped or defaulted: a skipped intent could mean a
//! second payment.
//!
//! A test (`every_row_type_follows_its_spec`) proves each row type's fields are its spec's columns: names,
//! order, types and nullability (a Rust `Option` exactly where the column is nullable).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use arrow::error::ArrowError;
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};

use super::spec::{ColumnType, TableSpec};
use crate::micros::{MICROS_PRECISION, MICROS_SCALE, Micros};
use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, MoneyError, Usd};

/// Why one cell could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("the result has no column {column}")]
    NoColumn { column: &'static str },
    #[error("{column} is {found}, expected {expected}")]
    Type { column: &'static str, expected: &'static str, found: DataType },
    #[error("{column} is NULL")]
    Null { column: &'static str },
    #[error("{column} is not an amount in cents: {source}")]
    Money {
        column: &'static str,
        #[source]
        source: MoneyError,
    },
    #[error("{column} = {value} is not {expected}")]
    Value { column: &'static str, value: String, expected: &'static str },
}

/// Why rows could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// A column is missing or of a type its field cannot be read from: no row can be read.
    #[error("{table}: {source}")]
    Column {
        table: &'static str,
        #[source]
        source: CellError,
    },
    #[error("{table}: cannot decode row {row}: {source}")]
    Undecodable {
        table: &'static str,
        /// The row's position in its batch and the values of its key columns.
        row: String,
        #[source]
        source: CellError,
    },
    #[error("{table}: cannot build a batch: {source}")]
    Batch {
        table: &'static str,
        #[source]
        source: ArrowError,
    },
}

impl RowError {
    /// The cell error behind this one.
    pub fn cell(&self) -> Option<&CellError> {
        match self {
            RowError::Column { source, .. } | RowError::Undecodable { source, .. } => Some(source),
            RowError::Batch { .. } => None,
        }
    }
}

/// A text column whose values are a closed set (kinds, events, statuses, codes, classes).
pub trait Text: Copy + 'static {
    /// What a value is, for an error: "a payout log event".
    const WHAT: &'static str;
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self>;
}

/// A value of one column type, never NULL: how a column of them is built, and how one is read back from a
/// column already in the layout [`normalise`] gives its type.
pub trait Cell: Sized {
    const TYPE: ColumnType;
    fn column<'a>(values: impl Iterator<Item = Option<&'a Self>>) -> Result<ArrayRef, ArrowError>
    where
        Self: 'a;
    /// The value at `row`; `None` when the cell is NULL.
    fn read(column: &ArrayRef, row: usize, name: &'static str) -> Result<Option<Self>, CellError>;
}

/// A field of a row: a [`Cell`] for a NOT NULL column, an `Option` of one for a nullable column.
pub trait Field: Sized {
    type Cell: Cell;
    const NULLABLE: bool;
    fn cell(&self) -> Option<&Self::Cell>;
    fn from_cell(cell: Option<Self::Cell>, name: &'static str) -> Result<Self, CellError>;
}

impl<T: Cell> Field for T {
    type Cell = T;
    const NULLABLE: bool = false;
    fn cell(&self) -> Option<&T> {
        Some(self)
    }
    fn from_cell(cell: Option<T>, column: &'static str) -> Result<T, CellError> {
        cell.ok_or(CellError::Null { column })
    }
}

impl<T: Cell> Field for Option<T> {
    type Cell = T;
    const NULLABLE: bool = true;
    fn cell(&self) -> Option<&T> {
        self.as_ref()
    }
    fn from_cell(cell: Option<T>, _: &'static str) -> Result<Option<T>, CellError> {
        Ok(cell)
    }
}

/// One field as declared: what the spec test compares with the table's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldShape {
    pub name: &'static str,
    pub kind: ColumnType,
    pub nullable: bool,
}

/// A table's row. Implemented by [`table_row!`]; use [`Row::to_batch`] and [`Row::from_batch`].
pub trait Row: Sized {
    const SPEC: &'static TableSpec;
    /// The columns that name a row in an error.
    const KEY: &'static [&'static str];
    fn fields() -> Vec<FieldShape>;
    /// The columns of `rows`, in field order.
    fn columns(rows: &[Self]) -> Result<Vec<ArrayRef>, ArrowError>;
    /// Every row of `batch`, its columns found by name.
    fn decode(batch: &RecordBatch) -> Result<Vec<Self>, RowError>;

    fn to_batch(rows: &[Self]) -> Result<RecordBatch, RowError> {
        let batch = |source| RowError::Batch { table: Self::SPEC.name, source };
        RecordBatch::try_new(Self::SPEC.arrow_schema(), Self::columns(rows).map_err(batch)?).map_err(batch)
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, RowError> {
        Self::decode(batch)
    }

    fn from_batches(batches: &[RecordBatch]) -> Result<Vec<Self>, RowError> {
        let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
        for b in batches {
            out.extend(Self::decode(b)?);
        }
        Ok(out)
    }
}

/// Declare a table's row type: the struct, and its [`Row`] implementation.
///
/// ```text
/// table_row! {
///     /// One row of the payout log.
///     pub struct LogEvent: PAYOUT_LOG, key(operation_id, event) {
///         pub operation_id: String,
///         pub amount_usd: Option<Usd>,
///     }
/// }
/// ```
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident: $spec:path, key($($key:ident),* $(,)?) {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty ),*
        }

        impl $crate::tables::row::Row for $name {
            const SPEC: &'static $crate::tables::TableSpec = &$spec;
            const KEY: &'static [&'static str] = &[$(stringify!($key)),*];

            fn fields() -> Vec<$crate::tables::row::FieldShape> {
                use $crate::tables::row::{Cell, Field, FieldShape};
                vec![$(FieldShape {
                    name: $crate::tables::row::column_name(stringify!($field)),
                    kind: <<$ty as Field>::Cell as Cell>::TYPE,
                    nullable: <$ty as Field>::NULLABLE,
                }),*]
            }

            fn columns(rows: &[Self]) -> Result<Vec<arrow::array::ArrayRef>, arrow::error::ArrowError> {
                use $crate::tables::row::{Cell, Field};
                Ok(vec![$(<<$ty as Field>::Cell as Cell>::column(rows.iter().map(|r| Field::cell(&r.$field)))?),*])
            }

            fn decode(batch: &arrow::array::RecordBatch) -> Result<Vec<Self>, $crate::tables::row::RowError> {
                use $crate::tables::row::{Cell, Field, column, undecodable};
                let table = <Self as $crate::tables::row::Row>::SPEC.name;
                $(let $field = column::<<$ty as Field>::Cell>(batch, table, $crate::tables::row::column_name(stringify!($field)))?;)*
                (0..batch.num_rows())
                    .map(|i| {
                        Ok(Self {
                            $($field: <$ty as Field>::from_cell(
                                <<$ty as Field>::Cell as Cell>::read(&$field, i, $crate::tables::row::column_name(stringify!($field)))
                                    .map_err(|e| undecodable::<Self>(batch, i, e))?,
                                $crate::tables::row::column_name(stringify!($field)),
                            )
                            .map_err(|e| undecodable::<Self>(batch, i, e))?),*
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use table_row;

/// The column a field is named after: the field's name, without the `r#` of a keyword (`r#type`).
pub fn column_name(field: &'static str) -> &'static str {
    field.strip_prefix("r#").unwrap_or(field)
}

/// The error for row `row` of `batch`: its position and the values of the row type's key columns.
pub fn undecodable<R: Row>(batch: &RecordBatch, row: usize, source: CellError) -> RowError {
    RowError::Undecodable { table: R::SPEC.name, row: row_name(batch, row, row, R::KEY), source }
}

/// How an error names a row: its position, and the values of the columns that identify it.
pub fn row_name(batch: &RecordBatch, row: usize, position: usize, subject: &[&str]) -> String {
    let values: Vec<String> = subject
        .iter()
        .filter_map(|name| {
            let column = batch.column_by_name(name)?;
            // Only for the message: an identifying cell that cannot be shown is left out, and the row
            // position still names the row.
            let value = arrow::util::display::array_value_to_string(column, row).ok()?;
            Some(format!("{name}={value}"))
        })
        .collect();
    if values.is_empty() { format!("#{position}") } else { format!("#{position} ({})", values.join(", ")) }
}

/// The column `name` of `batch` in the one layout `C` reads (see [`normalise`]).
pub fn column<C: Cell>(batch: &RecordBatch, table: &'static str, name: &'static str) -> Result<ArrayRef, RowError> {
    let c =
        batch.column_by_name(name).ok_or(RowError::Column { table, source: CellError::NoColumn { column: name } })?;
    normalise(C::TYPE, c, name).map_err(|source| RowError::Column { table, source })
}

/// A column as the one physical layout a column type is read from: dictionaries unpacked, text as `Utf8`,
/// integers as their declared width (refused, not wrapped, when a value does not fit), instants as
/// microseconds. Decimals keep their scale: the cell is converted exactly, or refused, when it is read.
pub fn normalise(kind: ColumnType, c: &ArrayRef, column: &'static str) -> Result<ArrayRef, CellError> {
    let c = match c.data_type() {
        DataType::Dictionary(_, value) => cast(c, value, column)?,
        _ => Arc::clone(c),
    };
    let wrong = |expected: &'static str| CellError::Type { column, expected, found: c.data_type().clone() };
    let dt = c.data_type();
    match kind {
        ColumnType::String => match dt {
            DataType::Utf8 => Ok(c),
            DataType::LargeUtf8 | DataType::Utf8View => cast(&c, &DataType::Utf8, column),
            _ => Err(wrong("text")),
        },
        ColumnType::Int | ColumnType::Long => {
            let to = if kind == ColumnType::Int { DataType::Int32 } else { DataType::Int64 };
            match dt {
                d if *d == to => Ok(c),
                d if d.is_integer() => cast(&c, &to, column),
                _ => Err(wrong(if kind == ColumnType::Int { "INT" } else { "BIGINT" })),
            }
        }
        ColumnType::Double => match dt {
            DataType::Float64 => Ok(c),
            DataType::Float32 => cast(&c, &DataType::Float64, column),
            _ => Err(wrong("DOUBLE")),
        },
        ColumnType::Boolean => match dt {
            DataType::Boolean => Ok(c),
            _ => Err(wrong("BOOLEAN")),
        },
        ColumnType::Timestamp => match dt {
            DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(c),
            DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, tz) => {
                cast(&c, &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()), column)
            }
            _ => Err(wrong("TIMESTAMP (microseconds)")),
        },
        ColumnType::Date => match dt {
            DataType::Date32 => Ok(c),
            _ => Err(wrong("DATE")),
        },
        ColumnType::Money | ColumnType::Micros => match dt {
            DataType::Decimal128(..) => Ok(c),
            _ => Err(wrong("DECIMAL")),
        },
    }
}

fn cast(c: &ArrayRef, to: &DataType, column: &'static str) -> Result<ArrayRef, CellError> {
    // Not `safe`: a value that does not fit is an error, never a NULL.
    let opts = CastOptions { safe: false, ..CastOptions::default() };
    cast_with_options(c, to, &opts).map_err(|e| CellError::Value {
        column,
        value: format!("a {} column ({e})", c.data_type()),
        expected: "convertible without loss",
    })
}

fn type_error(column: &'static str, expected: &'static str, c: &ArrayRef) -> CellError {
    CellError::Type { column, expected, found: c.data_type().clone() }
}

impl Cell for String {
    const TYPE: ColumnType = ColumnType::String;
    fn column<'a>(values: impl Iterator<Item = Option<&'a String>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.map(String::as_str)).collect::<StringArray>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<String>, CellError> {
        let a = c.as_string_opt::<i32>().ok_or_else(|| type_error(name, "text", c))?;
        Ok(a.is_valid(row).then(|| a.value(row).to_string()))
    }
}

impl<T: Text> Cell for T {
    const TYPE: ColumnType = ColumnType::String;
    fn column<'a>(values: impl Iterator<Item = Option<&'a T>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.map(|t| t.as_str())).collect::<StringArray>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<T>, CellError> {
        let Some(text) = String::read(c, row, name)? else { return Ok(None) };
        T::parse(&text).map(Some).ok_or(CellError::Value { column: name, value: text, expected: T::WHAT })
    }
}

impl Cell for i32 {
    const TYPE: ColumnType = ColumnType::Int;
    fn column<'a>(values: impl Iterator<Item = Option<&'a i32>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.copied()).collect::<Int32Array>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<i32>, CellError> {
        let a = c.as_primitive_opt::<Int32Type>().ok_or_else(|| type_error(name, "INT", c))?;
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
}

impl Cell for i64 {
    const TYPE: ColumnType = ColumnType::Long;
    fn column<'a>(values: impl Iterator<Item = Option<&'a i64>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.copied()).collect::<Int64Array>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<i64>, CellError> {
        let a = c.as_primitive_opt::<Int64Type>().ok_or_else(|| type_error(name, "BIGINT", c))?;
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
}

/// Only for `DOUBLE` columns (the seed's published wallet columns, metric thresholds): never money.
impl Cell for f64 {
    const TYPE: ColumnType = ColumnType::Double;
    fn column<'a>(values: impl Iterator<Item = Option<&'a f64>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.copied()).collect::<Float64Array>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<f64>, CellError> {
        let a = c.as_primitive_opt::<Float64Type>().ok_or_else(|| type_error(name, "DOUBLE", c))?;
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
}

impl Cell for bool {
    const TYPE: ColumnType = ColumnType::Boolean;
    fn column<'a>(values: impl Iterator<Item = Option<&'a bool>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.copied()).collect::<BooleanArray>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<bool>, CellError> {
        let a = c.as_boolean_opt().ok_or_else(|| type_error(name, "BOOLEAN", c))?;
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
}

impl Cell for DateTime<Utc> {
    const TYPE: ColumnType = ColumnType::Timestamp;
    fn column<'a>(values: impl Iterator<Item = Option<&'a DateTime<Utc>>>) -> Result<ArrayRef, ArrowError> {
        let a = values.map(|v| v.map(DateTime::timestamp_micros)).collect::<TimestampMicrosecondArray>();
        Ok(Arc::new(a.with_timezone("UTC")))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<DateTime<Utc>>, CellError> {
        let a = c
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| type_error(name, "TIMESTAMP (microseconds)", c))?;
        if a.is_null(row) {
            return Ok(None);
        }
        let us = a.value(row);
        Utc.timestamp_micros(us).single().map(Some).ok_or_else(|| CellError::Value {
            column: name,
            value: us.to_string(),
            expected: "an instant chrono can represent",
        })
    }
}

/// Days since 1970-01-01, as `Date32` holds them.
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - DateTime::UNIX_EPOCH.date_naive()).num_days() as i32
}

impl Cell for NaiveDate {
    const TYPE: ColumnType = ColumnType::Date;
    fn column<'a>(values: impl Iterator<Item = Option<&'a NaiveDate>>) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(values.map(|v| v.copied().map(days_since_epoch)).collect::<Date32Array>()))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<NaiveDate>, CellError> {
        let a = c.as_primitive_opt::<Date32Type>().ok_or_else(|| type_error(name, "DATE", c))?;
        if a.is_null(row) {
            return Ok(None);
        }
        let days = a.value(row);
        let epoch = DateTime::UNIX_EPOCH.date_naive();
        let date = if days >= 0 {
            epoch.checked_add_days(Days::new(days.unsigned_abs().into()))
        } else {
            epoch.checked_sub_days(Days::new(days.unsigned_abs().into()))
        };
        date.map(Some).ok_or_else(|| CellError::Value {
            column: name,
            value: days.to_string(),
            expected: "a day chrono can represent",
        })
    }
}

/// A decimal cell's raw value and the column's scale, or `None` when NULL.
fn decimal(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<(i128, i8)>, CellError> {
    let DataType::Decimal128(_, scale) = *c.data_type() else { return Err(type_error(name, "DECIMAL", c)) };
    let a = c.as_primitive_opt::<Decimal128Type>().ok_or_else(|| type_error(name, "DECIMAL", c))?;
    Ok(a.is_valid(row).then(|| (a.value(row), scale)))
}

impl Cell for Usd {
    const TYPE: ColumnType = ColumnType::Money;
    fn column<'a>(values: impl Iterator<Item = Option<&'a Usd>>) -> Result<ArrayRef, ArrowError> {
        let a = values.map(|v| v.map(|u| u.to_decimal128())).collect::<Decimal128Array>();
        Ok(Arc::new(a.with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)?))
    }
    /// Exact at any scale, or refused: a fraction of a cent is an error, never rounded.
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<Usd>, CellError> {
        decimal(c, row, name)?
            .map(|(raw, scale)| {
                Usd::from_decimal128(raw, scale).map_err(|source| CellError::Money { column: name, source })
            })
            .transpose()
    }
}

impl Cell for Micros {
    const TYPE: ColumnType = ColumnType::Micros;
    fn column<'a>(values: impl Iterator<Item = Option<&'a Micros>>) -> Result<ArrayRef, ArrowError> {
        let a = values.map(|v| v.map(|m| m.to_decimal128())).collect::<Decimal128Array>();
        Ok(Arc::new(a.with_precision_and_scale(MICROS_PRECISION, MICROS_SCALE)?))
    }
    fn read(c: &ArrayRef, row: usize, name: &'static str) -> Result<Option<Micros>, CellError> {
        decimal(c, row, name)?
            .map(|(raw, scale)| {
                Micros::from_decimal128(raw, scale).map_err(|source| CellError::Money { column: name, source })
            })
            .transpose()
    }
}

/// Whether a row type's fields are exactly its spec's columns: the same names in the same order, each of
/// the column's type, an `Option` exactly where the column is nullable.
pub fn follows_spec<R: Row>() -> Result<(), String> {
    let fields = R::fields();
    let columns: Vec<FieldShape> =
        R::SPEC.columns.iter().map(|c| FieldShape { name: c.name, kind: c.kind, nullable: c.nullable }).collect();
    if fields == columns {
        return Ok(());
    }
    let n = fields.len().max(columns.len());
    let diffs: Vec<String> = (0..n)
        .filter_map(|i| {
            let (f, c) = (fields.get(i), columns.get(i));
            (f != c).then(|| format!("#{i}: field {f:?}, column {c:?}"))
        })
        .collect();
    Err(format!("{}: {}", R::SPEC.name, diffs.join("; ")))
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Int8Array, StringViewArray};
    use arrow::datatypes::{Field as ArrowField, Int8Type, Schema};

    use super::*;
    use crate::tables::spec::{ColumnSpec, Writer};

    const fn col_spec(name: &'static str, kind: ColumnType, nullable: bool, comment: &'static str) -> ColumnSpec {
        ColumnSpec { name, kind, nullable, comment }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Color {
        Red,
        Blue,
    }

    impl Text for Color {
        const WHAT: &'static str = "a color";
        fn as_str(self) -> &'static str {
            match self {
                Color::Red => "red",
                Color::Blue => "blue",
            }
        }
        fn parse(s: &str) -> Option<Color> {
            [Color::Red, Color::Blue].into_iter().find(|c| c.as_str() == s)
        }
    }

    const SAMPLE: TableSpec = TableSpec {
        name: "test.rows.sample",
        writer: Writer::Pfsync,
        comment: "c",
        columns: &[
            col_spec("id", ColumnType::String, false, "c"),
            col_spec("color", ColumnType::String, true, "c"),
            col_spec("n", ColumnType::Int, false, "c"),
            col_spec("big", ColumnType::Long, true, "c"),
            col_spec("ratio", ColumnType::Double, true, "c"),
            col_spec("ok", ColumnType::Boolean, false, "c"),
            col_spec("at", ColumnType::Timestamp, false, "c"),
            col_spec("day", ColumnType::Date, true, "c"),
            col_spec("amount", ColumnType::Money, true, "c"),
            col_spec("exact", ColumnType::Micros, false, "c"),
        ],
        partition_columns: &[],
        properties: &[],
    };

    table_row! {
        struct Sample: SAMPLE, key(id) {
            id: String,
            color: Option<Color>,
            n: i32,
            big: Option<i64>,
            ratio: Option<f64>,
            ok: bool,
            at: DateTime<Utc>,
            day: Option<NaiveDate>,
            amount: Option<Usd>,
            exact: Micros,
        }
    }

    fn sample(id: &str) -> Sample {
        Sample {
            id: id.into(),
            color: Some(Color::Blue),
            n: -3,
            big: Some(1 << 40),
            ratio: Some(0.5),
            ok: true,
            at: Utc.timestamp_micros(1_750_000_000_123_456).unwrap(),
            day: NaiveDate::from_ymd_opt(1969, 12, 31),
            amount: Some(Usd::parse("12.34").unwrap()),
            exact: Micros::parse("0.1234").unwrap(),
        }
    }

    fn with_column(b: &RecordBatch, name: &str, c: ArrayRef) -> RecordBatch {
        let schema = b.schema();
        let i = schema.index_of(name).unwrap();
        let mut fields: Vec<ArrowField> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[i] = ArrowField::new(name, c.data_type().clone(), true);
        let mut columns = b.columns().to_vec();
        columns[i] = c;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn a_row_survives_a_batch_both_ways_with_nulls_where_nullable() {
        let empty = Sample { color: None, big: None, ratio: None, day: None, amount: None, ..sample("b") };
        let rows = vec![sample("a"), empty];
        let batch = Sample::to_batch(&rows).unwrap();
        assert_eq!(batch.schema(), SAMPLE.arrow_schema());
        assert_eq!(Sample::from_batch(&batch).unwrap(), rows);
        follows_spec::<Sample>().unwrap();
    }

    #[test]
    fn other_layouts_of_the_same_logical_type_decode_to_the_same_values() {
        let batch = Sample::to_batch(&[sample("a")]).unwrap();
        let keys = Int8Array::from(vec![0]);
        let dict = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(StringArray::from(vec!["blue"]))).unwrap();
        let batch = with_column(&batch, "id", Arc::new(StringViewArray::from(vec!["a"])));
        let batch = with_column(&batch, "color", Arc::new(dict));
        // What a sum or a cast hands back: DECIMAL(38,3) holding 12.340, and a BIGINT for an INT.
        let wide = Decimal128Array::from(vec![12_340]).with_precision_and_scale(38, 3).unwrap();
        let batch = with_column(&batch, "amount", Arc::new(wide));
        let batch = with_column(&batch, "n", Arc::new(Int64Array::from(vec![-3])));
        // Extra columns and another order do not matter: columns are found by name.
        let mut reordered: Vec<ArrowField> = batch.schema().fields().iter().rev().map(|f| f.as_ref().clone()).collect();
        reordered.push(ArrowField::new("extra", DataType::Utf8, true));
        let mut columns: Vec<ArrayRef> = batch.columns().iter().rev().cloned().collect();
        columns.push(Arc::new(StringArray::from(vec!["x"])));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(reordered)), columns).unwrap();
        assert_eq!(Sample::from_batch(&batch).unwrap(), [sample("a")]);
    }

    #[test]
    fn what_cannot_be_decoded_is_an_error_naming_the_table_the_row_and_the_column() {
        let batch = Sample::to_batch(&[sample("a"), sample("b")]).unwrap();
        let message = |b: &RecordBatch| Sample::from_batch(b).unwrap_err().to_string();

        let fraction = Decimal128Array::from(vec![Some(12_340), Some(12_341)]).with_precision_and_scale(38, 3).unwrap();
        let err = Sample::from_batch(&with_column(&batch, "amount", Arc::new(fraction))).unwrap_err();
        assert!(matches!(err.cell(), Some(CellError::Money { column: "amount", .. })), "{err:?}");
        assert!(err.to_string().starts_with("test.rows.sample: cannot decode row #1 (id=b): amount"), "{err}");

        let unknown = StringArray::from(vec![Some("red"), Some("green")]);
        let m = message(&with_column(&batch, "color", Arc::new(unknown)));
        assert!(m.contains("(id=b)") && m.contains("color = green is not a color"), "{m}");

        let null = Int32Array::from(vec![Some(1), None]);
        let m = message(&with_column(&batch, "n", Arc::new(null)));
        assert!(m.contains("(id=b)") && m.contains("n is NULL"), "{m}");

        let too_big = Int64Array::from(vec![1, i64::MAX]);
        assert!(message(&with_column(&batch, "n", Arc::new(too_big))).contains("n = "));

        let text = StringArray::from(vec!["1", "2"]);
        let err = Sample::from_batch(&with_column(&batch, "exact", Arc::new(text))).unwrap_err();
        assert!(matches!(err, RowError::Column { source: CellError::Type { column: "exact", .. }, .. }), "{err:?}");

        let projected = batch.project(&[0, 1]).unwrap();
        let err = Sample::from_batch(&projected).unwrap_err();
        assert!(matches!(err, RowError::Column { source: CellError::NoColumn { column: "n" }, .. }), "{err:?}");
    }

    /// Every table's row type, checked against its spec: a spec change its row does not follow fails here.
    #[test]
    fn every_row_type_follows_its_spec() {
        let checks = [
            follows_spec::<crate::payouts::log::LogEvent>(),
            follows_spec::<crate::payouts::log::RejectRow>(),
            follows_spec::<crate::reconcile::ReconciliationRow>(),
            follows_spec::<crate::reconcile::DailyTotal>(),
            follows_spec::<crate::reconcile::state::ClassificationRow>(),
            follows_spec::<crate::reconcile::state::ImpliedBalance>(),
            follows_spec::<crate::sync::rows::TransactionRow>(),
            follows_spec::<crate::ops::RunRow>(),
            follows_spec::<crate::mcp::audit::CallRecord>(),
            follows_spec::<crate::sync::rows::WalletRow>(),
            follows_spec::<crate::sync::rows::EscrowRow>(),
            follows_spec::<crate::sync::rows::EscrowTermsRow>(),
            follows_spec::<crate::sync::rows::TransactionRow>(),
            follows_spec::<crate::ledger::rows::LedgerEntryRow>(),
            follows_spec::<crate::ledger::rows::LedgerGapRow>(),
            follows_spec::<crate::payouts::requested::PendingPayoutRow>(),
            follows_spec::<crate::payouts::requested::EscrowActionRow>(),
        ];
        let failed: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn a_row_type_that_drifts_from_its_spec_is_caught() {
        table_row! {
            struct Drifted: SAMPLE, key(id) {
                id: String,
                color: Color,
                n: i64,
            }
        }
        let err = follows_spec::<Drifted>().unwrap_err();
        assert!(err.contains("\"color\"") && err.contains("\"n\"") && err.contains("\"big\""), "{err}");
        let _ = Drifted { id: String::new(), color: Color::Red, n: 0 };
    }
}
