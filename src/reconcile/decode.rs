//! Typed cells of query results, read by column name: text as Utf8 or Utf8View (DataFusion chooses), money
//! as `Decimal128` at any scale (exact cents or refused), counts as `Int64`, instants as microsecond
//! timestamps, days as `Date32`. Nothing goes through text: what an auditor reads is the value the table
//! holds. A cell that is NULL where a value is required, or of another type, is a [`CellError`] naming the
//! column; [`decode`] adds the query and the row.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};

use super::matching::Query;
use super::{Class, ReconcileError};
use crate::micros::Micros;
use crate::money::Usd;

use crate::tables::row::{Row, RowError, Text, row_name};

pub use crate::tables::row::CellError;

/// One row of a batch, its cells read by column name.
pub struct Cells<'a> {
    batch: &'a RecordBatch,
    row: usize,
}

impl<'a> Cells<'a> {
    fn column(&self, column: &'static str) -> Result<&'a ArrayRef, CellError> {
        self.batch.column_by_name(column).ok_or(CellError::NoColumn { column })
    }

    fn type_error(column: &'static str, expected: &'static str, c: &ArrayRef) -> CellError {
        CellError::Type { column, expected, found: c.data_type().clone() }
    }

    /// Text that may be NULL.
    pub fn opt_text(&self, column: &'static str) -> Result<Option<String>, CellError> {
        let c = self.column(column)?;
        let text = match c.data_type() {
            DataType::Utf8 => c.as_string_opt::<i32>().map(|a| a.is_valid(self.row).then(|| a.value(self.row))),
            DataType::LargeUtf8 => c.as_string_opt::<i64>().map(|a| a.is_valid(self.row).then(|| a.value(self.row))),
            DataType::Utf8View => c.as_string_view_opt().map(|a| a.is_valid(self.row).then(|| a.value(self.row))),
            _ => None,
        };
        text.map(|t| t.map(str::to_string)).ok_or_else(|| Self::type_error(column, "text", c))
    }

    pub fn text(&self, column: &'static str) -> Result<String, CellError> {
        self.opt_text(column)?.ok_or(CellError::Null { column })
    }

    /// Money that may be NULL; a value that is not whole cents within the contract's range is refused.
    pub fn opt_usd(&self, column: &'static str) -> Result<Option<Usd>, CellError> {
        let c = self.column(column)?;
        let DataType::Decimal128(_, scale) = *c.data_type() else {
            return Err(Self::type_error(column, "DECIMAL", c));
        };
        let a = c.as_primitive_opt::<Decimal128Type>().ok_or_else(|| Self::type_error(column, "DECIMAL", c))?;
        if a.is_null(self.row) {
            return Ok(None);
        }
        Usd::from_decimal128(a.value(self.row), scale).map(Some).map_err(|source| CellError::Money { column, source })
    }

    pub fn usd(&self, column: &'static str) -> Result<Usd, CellError> {
        self.opt_usd(column)?.ok_or(CellError::Null { column })
    }

    /// A provider amount in micro-dollars (`DECIMAL` of scale 6 or less), exact.
    pub fn micros(&self, column: &'static str) -> Result<Micros, CellError> {
        let c = self.column(column)?;
        let DataType::Decimal128(_, scale) = *c.data_type() else {
            return Err(Self::type_error(column, "DECIMAL", c));
        };
        let a = c.as_primitive_opt::<Decimal128Type>().ok_or_else(|| Self::type_error(column, "DECIMAL", c))?;
        if a.is_null(self.row) {
            return Err(CellError::Null { column });
        }
        Micros::from_decimal128(a.value(self.row), scale).map_err(|source| CellError::Money { column, source })
    }

    /// A `DOUBLE` that may be NULL (only the seed's wallet balance column).
    pub fn opt_double(&self, column: &'static str) -> Result<Option<f64>, CellError> {
        let c = self.column(column)?;
        let a = c.as_primitive_opt::<Float64Type>().ok_or_else(|| Self::type_error(column, "DOUBLE", c))?;
        Ok(a.is_valid(self.row).then(|| a.value(self.row)))
    }

    /// A `BIGINT` that is whole cents (the wallet comparison works in cents).
    pub fn cents(&self, column: &'static str) -> Result<Usd, CellError> {
        Usd::from_cents(self.int(column)?).map_err(|source| CellError::Money { column, source })
    }

    pub fn int(&self, column: &'static str) -> Result<i64, CellError> {
        let c = self.column(column)?;
        let a = c.as_primitive_opt::<Int64Type>().ok_or_else(|| Self::type_error(column, "BIGINT", c))?;
        if a.is_null(self.row) {
            return Err(CellError::Null { column });
        }
        Ok(a.value(self.row))
    }

    /// A count of rows: a `BIGINT` that cannot be negative.
    pub fn count(&self, column: &'static str) -> Result<u64, CellError> {
        let n = self.int(column)?;
        u64::try_from(n).map_err(|_| CellError::Value { column, value: n.to_string(), expected: "a count" })
    }

    /// A UTC instant (any time zone label: the value is microseconds since the epoch either way).
    pub fn timestamp(&self, column: &'static str) -> Result<DateTime<Utc>, CellError> {
        let c = self.column(column)?;
        let a = match c.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => c.as_primitive_opt::<TimestampMicrosecondType>(),
            _ => None,
        }
        .ok_or_else(|| Self::type_error(column, "TIMESTAMP (microseconds)", c))?;
        if a.is_null(self.row) {
            return Err(CellError::Null { column });
        }
        let us = a.value(self.row);
        Utc.timestamp_micros(us).single().ok_or_else(|| CellError::Value {
            column,
            value: us.to_string(),
            expected: "an instant chrono can represent",
        })
    }

    pub fn date(&self, column: &'static str) -> Result<NaiveDate, CellError> {
        let c = self.column(column)?;
        let a = c.as_primitive_opt::<Date32Type>().ok_or_else(|| Self::type_error(column, "DATE", c))?;
        if a.is_null(self.row) {
            return Err(CellError::Null { column });
        }
        let days = a.value(self.row);
        let epoch = DateTime::UNIX_EPOCH.date_naive();
        let date = if days >= 0 {
            epoch.checked_add_days(Days::new(days.unsigned_abs().into()))
        } else {
            epoch.checked_sub_days(Days::new(days.unsigned_abs().into()))
        };
        date.ok_or_else(|| CellError::Value { column, value: days.to_string(), expected: "a day chrono can represent" })
    }

    pub fn class(&self, column: &'static str) -> Result<Class, CellError> {
        let text = self.text(column)?;
        Class::parse(&text).ok_or(CellError::Value { column, value: text, expected: "a reconciliation class" })
    }

    /// One of a closed set of values (a kind, a status), by its text.
    pub fn parsed<T: Text>(&self, column: &'static str) -> Result<T, CellError> {
        let text = self.text(column)?;
        T::parse(&text).ok_or(CellError::Value { column, value: text, expected: T::WHAT })
    }
}

/// Dictionary-encoded columns (delta-rs may hand partition values over that way) as plain arrays of their
/// value type, so [`Cells`] reads one layout per type. Unpacking, not a conversion: the values are unchanged.
fn unpack_dictionaries(batch: &RecordBatch) -> Result<RecordBatch, ReconcileError> {
    if !batch.schema().fields().iter().any(|f| matches!(f.data_type(), DataType::Dictionary(..))) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Dictionary(_, value) => {
                columns.push(arrow::compute::cast(column, value)?);
                fields.push(field.as_ref().clone().with_data_type(value.as_ref().clone()));
            }
            _ => {
                columns.push(Arc::clone(column));
                fields.push(field.as_ref().clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?)
}

/// Every row of a query's result, decoded by `row`. `subject` names the columns that identify a row in an
/// error (an operation id, a transaction id, a finding key).
pub fn decode<T>(
    query: &Query,
    batches: &[RecordBatch],
    subject: &[&'static str],
    row: impl Fn(&Cells<'_>) -> Result<T, CellError>,
) -> Result<Vec<T>, ReconcileError> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        let batch = unpack_dictionaries(batch)?;
        for i in 0..batch.num_rows() {
            let decoded = row(&Cells { batch: &batch, row: i }).map_err(|source| ReconcileError::Undecodable {
                query: query.file,
                row: row_name(&batch, i, out.len(), subject),
                source,
            })?;
            out.push(decoded);
        }
    }
    Ok(out)
}

/// Every row of a query that returns a table's rows, decoded as that table's row type. A row that cannot be
/// decoded is an error naming the query, the row (by its key) and the column, as [`decode`] gives.
pub fn decode_rows<R: Row>(query: &Query, batches: &[RecordBatch]) -> Result<Vec<R>, ReconcileError> {
    R::from_batches(batches).map_err(|e| match e {
        RowError::Undecodable { row, source, .. } => ReconcileError::Undecodable { query: query.file, row, source },
        RowError::Column { source, .. } => {
            ReconcileError::Undecodable { query: query.file, row: "(every row)".into(), source }
        }
        e @ RowError::Batch { .. } => ReconcileError::Row(e),
    })
}

/// The one row of a query that returns exactly one (a total, a count).
pub fn decode_one<T>(
    query: &Query,
    batches: &[RecordBatch],
    row: impl Fn(&Cells<'_>) -> Result<T, CellError>,
) -> Result<T, ReconcileError> {
    let mut rows = decode(query, batches, &[], row)?;
    match rows.len() {
        1 => Ok(rows.remove(0)),
        found => Err(ReconcileError::RowCount { query: query.file, expected: 1, found }),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Date32Array, Decimal128Array, DictionaryArray, Int8Array, Int32Array, Int64Array, StringArray, StringViewArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Int8Type, Schema};

    use super::*;
    use crate::reconcile::matching::UNLOGGED_AT_PROVIDER;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns.iter().map(|(n, c)| Field::new(*n, c.data_type().clone(), true)).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, c)| c).collect()).unwrap()
    }

    fn money(values: Vec<Option<i128>>, scale: i8) -> ArrayRef {
        Arc::new(Decimal128Array::from(values).with_precision_and_scale(18, scale).unwrap())
    }

    fn unlogged(b: &RecordBatch) -> Result<Vec<(String, Usd)>, ReconcileError> {
        decode(&UNLOGGED_AT_PROVIDER, std::slice::from_ref(b), &["tx_id"], |r| {
            Ok((r.text("tx_id")?, r.usd("amount_usd")?))
        })
    }

    #[test]
    fn text_reads_utf8_and_utf8view_and_money_reads_decimal_at_its_scale() {
        let plain = batch(vec![
            ("tx_id", Arc::new(StringArray::from(vec!["tx_1"]))),
            ("amount_usd", money(vec![Some(250)], 2)),
        ]);
        let view = batch(vec![
            ("tx_id", Arc::new(StringViewArray::from(vec!["tx_1"]))),
            // A sum comes back wider: DECIMAL(38,3) holding 2.500.
            ("amount_usd", money(vec![Some(2500)], 3)),
        ]);
        let want = vec![("tx_1".to_string(), Usd::from_cents(250).unwrap())];
        assert_eq!(unlogged(&plain).unwrap(), want);
        assert_eq!(unlogged(&view).unwrap(), want);
    }

    #[test]
    fn a_null_amount_is_an_error_naming_the_query_the_row_and_the_column() {
        let b = batch(vec![
            ("tx_id", Arc::new(StringArray::from(vec!["tx_1", "tx_2"]))),
            ("amount_usd", money(vec![Some(100), None], 2)),
        ]);
        let err = unlogged(&b).unwrap_err();
        assert!(
            matches!(&err, ReconcileError::Undecodable { query, source: CellError::Null { column: "amount_usd" }, .. }
                if *query == "sql/reconcile/unlogged_at_provider.sql"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("tx_id=tx_2") && message.contains("amount_usd is NULL"), "{message}");
    }

    #[test]
    fn fractions_of_a_cent_and_wrong_types_are_refused_not_rounded_or_defaulted() {
        let fraction = batch(vec![
            ("tx_id", Arc::new(StringArray::from(vec!["tx_1"]))),
            ("amount_usd", money(vec![Some(2501)], 3)),
        ]);
        assert!(matches!(
            unlogged(&fraction).unwrap_err(),
            ReconcileError::Undecodable { source: CellError::Money { column: "amount_usd", .. }, .. }
        ));
        let text_amount = batch(vec![
            ("tx_id", Arc::new(StringArray::from(vec!["tx_1"]))),
            ("amount_usd", Arc::new(StringArray::from(vec!["2.50"]))),
        ]);
        let err = unlogged(&text_amount).unwrap_err();
        assert!(
            matches!(&err, ReconcileError::Undecodable { source: CellError::Type { column: "amount_usd", .. }, .. }),
            "{err:?}"
        );
        let no_column = batch(vec![("tx_id", Arc::new(StringArray::from(vec!["tx_1"])))]);
        assert!(matches!(
            unlogged(&no_column).unwrap_err(),
            ReconcileError::Undecodable { source: CellError::NoColumn { column: "amount_usd" }, .. }
        ));
    }

    #[test]
    fn counts_instants_days_classes_and_dictionary_columns_decode_with_their_types() {
        let keys = Int8Array::from(vec![0, 0]);
        let kinds = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(StringArray::from(vec!["payout"]))).unwrap();
        let b = batch(vec![
            ("class", Arc::new(StringArray::from(vec!["amount_mismatch", "no_such_class"]))),
            ("n", Arc::new(Int64Array::from(vec![3, -1]))),
            ("at", Arc::new(TimestampMicrosecondArray::from(vec![1_000_000, 0]).with_timezone("UTC"))),
            ("day", Arc::new(Date32Array::from(vec![1, -1]))),
            ("kind", Arc::new(kinds)),
            ("int32", Arc::new(Int32Array::from(vec![1, 1]))),
        ]);
        let one = RecordBatch::try_new(b.schema(), b.columns().iter().map(|c| c.slice(0, 1)).collect()).unwrap();
        let got = decode(&UNLOGGED_AT_PROVIDER, &[one], &["class"], |r| {
            Ok((r.class("class")?, r.count("n")?, r.timestamp("at")?, r.date("day")?, r.text("kind")?))
        })
        .unwrap();
        assert_eq!(
            got,
            [(
                Class::AmountMismatch,
                3,
                Utc.timestamp_micros(1_000_000).unwrap(),
                NaiveDate::from_ymd_opt(1970, 1, 2).unwrap(),
                "payout".to_string()
            )]
        );
        let second = |f: fn(&Cells<'_>) -> Result<(), CellError>| {
            decode(&UNLOGGED_AT_PROVIDER, std::slice::from_ref(&b.slice(1, 1)), &["class"], f).unwrap_err()
        };
        let err = second(|r| r.class("class").map(drop));
        assert!(err.to_string().contains("no_such_class is not a reconciliation class"), "{err}");
        assert!(matches!(second(|r| r.count("n").map(drop)), ReconcileError::Undecodable { .. }));
        assert!(matches!(
            second(|r| r.int("int32").map(drop)),
            ReconcileError::Undecodable { source: CellError::Type { column: "int32", .. }, .. }
        ));
        assert_eq!(
            decode(&UNLOGGED_AT_PROVIDER, &[b.slice(1, 1)], &[], |r| r.date("day")).unwrap(),
            [NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()]
        );
    }

    #[test]
    fn a_single_row_query_with_no_row_is_an_error() {
        let empty = batch(vec![("n", Arc::new(Int64Array::from(Vec::<i64>::new())))]);
        assert!(matches!(
            decode_one(&UNLOGGED_AT_PROVIDER, &[empty], |r| r.count("n")),
            Err(ReconcileError::RowCount { expected: 1, found: 0, .. })
        ));
    }
}
