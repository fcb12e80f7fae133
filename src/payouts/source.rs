//! Reading pending payouts and escrow actions: from their default tables, or from any SQL query
//! (DataFusion) that produces the same columns. Column types are taken as they come (DECIMAL, DOUBLE,
//! integers or text for amounts; any string or timestamp type) and converted exactly or refused per row.

use arrow::array::{Array, ArrayRef, Decimal128Array, Float32Array, Float64Array, RecordBatch, StringArray};
use arrow::array::{Int16Array, Int32Array, Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use super::PayoutError;
use super::validate::{MAX_SOURCE_ROW_BYTES, RawAction, RawAmount, RawPayout};
use crate::money::{MoneyError, Usd};

pub const PAYOUT_COLUMNS: &[&str] = &["payout_id", "agent_id", "amount_usd", "reason"];
pub const ACTION_COLUMNS: &[&str] = &["action_id", "action"];

pub const DEFAULT_PAYOUT_SQL: &str = "SELECT * FROM purpleflea.payouts.pending";
pub const DEFAULT_ACTION_SQL: &str = "SELECT * FROM purpleflea.escrow.actions";

/// Run a source query; a missing required column is a configuration error, reported before anything
/// else happens.
pub async fn query(ctx: &SessionContext, sql: &str, required: &[&str]) -> Result<Vec<RecordBatch>, PayoutError> {
    let df = ctx.sql(sql).await.map_err(|e| PayoutError::Source(format!("source query {sql:?}: {e}")))?;
    let schema = df.schema().clone();
    for c in required {
        if schema.field_with_unqualified_name(c).is_err() {
            return Err(PayoutError::Source(format!(
                "source query {sql:?} must produce a column named {c} (required: {})",
                required.join(", ")
            )));
        }
    }
    df.collect().await.map_err(|e| PayoutError::Source(format!("source query {sql:?}: {e}")))
}

/// Typed access to one batch's columns by name.
struct Columns<'a> {
    batch: &'a RecordBatch,
    formatters: Vec<(String, ArrayFormatter<'a>)>,
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Columns<'a>, PayoutError> {
        let opts = FormatOptions::default();
        let mut formatters = Vec::new();
        for (i, f) in batch.schema().fields().iter().enumerate() {
            formatters.push((f.name().clone(), ArrayFormatter::try_new(batch.column(i).as_ref(), &opts)?));
        }
        Ok(Columns { batch, formatters })
    }

    fn column(&self, name: &str) -> Option<&'a ArrayRef> {
        self.batch.column_by_name(name)
    }

    fn text(&self, name: &str) -> Result<Option<StringArray>, PayoutError> {
        let Some(c) = self.column(name) else { return Ok(None) };
        let cast = arrow::compute::cast(c, &DataType::Utf8)?;
        Ok(cast.as_any().downcast_ref::<StringArray>().cloned())
    }

    fn times(&self, name: &str) -> Option<TimestampMicrosecondArray> {
        let c = self.column(name)?;
        let cast = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))).ok()?;
        cast.as_any().downcast_ref::<TimestampMicrosecondArray>().cloned()
    }

    /// The row as JSON text, for the rejects table (each value as it displays, clipped).
    fn row_json(&self, i: usize) -> String {
        let mut m = Map::new();
        for (name, f) in &self.formatters {
            let col = self.batch.column_by_name(name);
            let v = if col.is_some_and(|c| c.is_null(i)) {
                Value::Null
            } else {
                let mut s = f.value(i).to_string();
                if s.len() > 512 {
                    let mut end = 512;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s.truncate(end);
                    s.push_str("...");
                }
                Value::String(s)
            };
            m.insert(name.clone(), v);
        }
        let mut s = Value::Object(m).to_string();
        if s.len() > MAX_SOURCE_ROW_BYTES {
            let mut end = MAX_SOURCE_ROW_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    }
}

fn get(a: &Option<StringArray>, i: usize) -> Option<String> {
    a.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i).to_string())
}

fn time(a: &Option<TimestampMicrosecondArray>, i: usize) -> Option<DateTime<Utc>> {
    a.as_ref().filter(|a| !a.is_null(i)).and_then(|a| Utc.timestamp_micros(a.value(i)).single())
}

/// Amount cells, exactly: DECIMAL at any scale (refused if not whole cents), DOUBLE only when it is whole
/// cents, integers as whole dollars, text parsed as a decimal.
fn amounts(c: Option<&ArrayRef>) -> Result<Vec<RawAmount>, PayoutError> {
    let Some(c) = c else { return Ok(Vec::new()) };
    let n = c.len();
    let each = |f: &dyn Fn(usize) -> Result<Usd, MoneyError>| -> Vec<RawAmount> {
        (0..n).map(|i| if c.is_null(i) { RawAmount::Missing } else { RawAmount::Value(f(i)) }).collect()
    };
    let dollars =
        |v: i64| v.checked_mul(100).ok_or_else(|| MoneyError::Overflow(v.to_string())).and_then(Usd::from_cents);
    Ok(match c.data_type() {
        DataType::Decimal128(_, scale) => {
            let a =
                c.as_any().downcast_ref::<Decimal128Array>().ok_or_else(|| PayoutError::Source("decimal".into()))?;
            each(&|i| Usd::from_decimal128(a.value(i), *scale))
        }
        DataType::Float64 => {
            let a = c.as_any().downcast_ref::<Float64Array>().ok_or_else(|| PayoutError::Source("double".into()))?;
            each(&|i| Usd::from_f64_exact(a.value(i)))
        }
        DataType::Float32 => {
            let a = c.as_any().downcast_ref::<Float32Array>().ok_or_else(|| PayoutError::Source("float".into()))?;
            // The float's own shortest decimal form, not its widened double's.
            each(&|i| Usd::parse(&a.value(i).to_string()))
        }
        DataType::Int64 => {
            let a = c.as_any().downcast_ref::<Int64Array>().ok_or_else(|| PayoutError::Source("bigint".into()))?;
            each(&|i| dollars(a.value(i)))
        }
        DataType::Int32 => {
            let a = c.as_any().downcast_ref::<Int32Array>().ok_or_else(|| PayoutError::Source("int".into()))?;
            each(&|i| dollars(a.value(i) as i64))
        }
        DataType::Int16 => {
            let a = c.as_any().downcast_ref::<Int16Array>().ok_or_else(|| PayoutError::Source("smallint".into()))?;
            each(&|i| dollars(a.value(i) as i64))
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            let cast = arrow::compute::cast(c, &DataType::Utf8)?;
            let a = cast.as_any().downcast_ref::<StringArray>().ok_or_else(|| PayoutError::Source("text".into()))?;
            each(&|i| Usd::parse(a.value(i)))
        }
        other => {
            let t = other.to_string();
            each(&|_| Err(MoneyError::NotANumber(format!("a value of type {t}"))))
        }
    })
}

pub fn payouts_from(batches: &[RecordBatch]) -> Result<Vec<RawPayout>, PayoutError> {
    let mut out = Vec::new();
    for b in batches {
        let cols = Columns::new(b)?;
        let (id, agent, reason) = (cols.text("payout_id")?, cols.text("agent_id")?, cols.text("reason")?);
        let amount = amounts(cols.column("amount_usd"))?;
        let at = cols.times("requested_at");
        for i in 0..b.num_rows() {
            out.push(RawPayout {
                payout_id: get(&id, i),
                agent_id: get(&agent, i),
                amount: amount.get(i).cloned().unwrap_or(RawAmount::Missing),
                reason: get(&reason, i),
                requested_at: time(&at, i),
                source_row: cols.row_json(i),
            });
        }
    }
    Ok(out)
}

pub fn actions_from(batches: &[RecordBatch]) -> Result<Vec<RawAction>, PayoutError> {
    let mut out = Vec::new();
    for b in batches {
        let cols = Columns::new(b)?;
        let t = |n: &str| cols.text(n);
        let (id, action, escrow, create) = (t("action_id")?, t("action")?, t("escrow_id")?, t("create_action_id")?);
        let (buyer, seller, desc, meta, reason) =
            (t("buyer_agent_id")?, t("seller_agent_id")?, t("description")?, t("metadata")?, t("reason")?);
        let amount = amounts(cols.column("amount_usd"))?;
        let at = cols.times("requested_at");
        for i in 0..b.num_rows() {
            out.push(RawAction {
                action_id: get(&id, i),
                action: get(&action, i),
                escrow_id: get(&escrow, i),
                create_action_id: get(&create, i),
                buyer_agent_id: get(&buyer, i),
                seller_agent_id: get(&seller, i),
                amount: amount.get(i).cloned().unwrap_or(RawAmount::Missing),
                description: get(&desc, i),
                metadata: get(&meta, i),
                reason: get(&reason, i),
                requested_at: time(&at, i),
                source_row: cols.row_json(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn amounts_convert_exactly_or_refuse() {
        let dec: ArrayRef =
            Arc::new(Decimal128Array::from(vec![Some(1250), Some(1), None]).with_precision_and_scale(18, 3).unwrap());
        let a = amounts(Some(&dec)).unwrap();
        assert_eq!(a[0], RawAmount::Value(Ok(Usd::from_cents(125).unwrap())));
        assert!(matches!(a[1], RawAmount::Value(Err(_))), "0.001 is not whole cents");
        assert_eq!(a[2], RawAmount::Missing);
        let dbl: ArrayRef = Arc::new(Float64Array::from(vec![19.99, f64::NAN, 0.125, 1e300]));
        let a = amounts(Some(&dbl)).unwrap();
        assert_eq!(a[0], RawAmount::Value(Ok(Usd::from_cents(1999).unwrap())));
        assert!(a[1..].iter().all(|x| matches!(x, RawAmount::Value(Err(_)))));
        let txt: ArrayRef = Arc::new(StringArray::from(vec!["7.5", "seven"]));
        let a = amounts(Some(&txt)).unwrap();
        assert_eq!(a[0], RawAmount::Value(Ok(Usd::from_cents(750).unwrap())));
        assert!(matches!(a[1], RawAmount::Value(Err(_))));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![3, i64::MAX]));
        let a = amounts(Some(&ints)).unwrap();
        assert_eq!(a[0], RawAmount::Value(Ok(Usd::from_cents(300).unwrap())));
        assert!(matches!(a[1], RawAmount::Value(Err(_))));
    }
}
