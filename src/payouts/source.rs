//! Where operations come from, behind one seam: a [`Source`] yields raw rows (payouts or escrow actions)
//! that the common validation turns into operations. The pending table, the actions table and the
//! `--payouts-sql` / `--actions-sql` queries are all [`SqlSource`]s; a new kind of source (a change feed,
//! metric rules) is one new module implementing [`Source`].
//!
//! Column types are taken as they come (DECIMAL, DOUBLE, integers or text for amounts; any string or
//! timestamp type) and converted exactly or refused per row.

use arrow::array::{Array, ArrayRef, Decimal128Array, Float32Array, Float64Array, RecordBatch, StringArray};
use arrow::array::{Int16Array, Int32Array, Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use futures::future::BoxFuture;

use super::PayoutError;
use super::validate::{
    MAX_SOURCE_ROW_BYTES, RawAction, RawAmount, RawPayout, Reject, clip_marked, validate_action, validate_payout,
};
use crate::money::{MoneyError, Usd};
use crate::operation::Operation;

/// One row of any source, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum RawRow {
    Payout(RawPayout),
    Action(RawAction),
    /// A row the source itself already found wrong (a metric rule that cannot be evaluated).
    Refused(Reject),
}

impl RawRow {
    /// The operation id the row claims, if it has one (for sharding before validation).
    pub fn id(&self) -> Option<&str> {
        match self {
            RawRow::Payout(p) => p.payout_id.as_deref(),
            RawRow::Action(a) => a.action_id.as_deref(),
            RawRow::Refused(r) => r.operation_id.as_deref(),
        }
    }

    pub fn validate(&self) -> Result<Operation, Reject> {
        match self {
            RawRow::Payout(p) => validate_payout(p),
            RawRow::Action(a) => validate_action(a),
            RawRow::Refused(r) => Err(r.clone()),
        }
    }

    /// The row as JSON text, kept for the rejects table.
    pub fn into_source_row(self) -> String {
        match self {
            RawRow::Payout(p) => p.source_row,
            RawRow::Action(a) => a.source_row,
            RawRow::Refused(r) => r.source_row,
        }
    }
}

/// A source of operations. Sources read; they never decide what is paid.
pub trait Source: Send + Sync {
    /// How the source is named in messages (`purpleflea.payouts.pending`, `--payouts-sql`).
    fn name(&self) -> String;

    /// Every row the source holds now. `ctx` has the warehouse's tables registered.
    fn read<'a>(&'a self, ctx: &'a SessionContext) -> BoxFuture<'a, Result<Vec<RawRow>, PayoutError>>;
}

/// What a SQL source yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowShape {
    Payouts,
    Actions,
}

/// A SQL query over the warehouse's tables whose columns are those of the pending table or the actions
/// table. A default table that does not exist (no upstream job wrote it yet: pfsync never creates it at
/// run time) is an empty source.
pub struct SqlSource {
    pub name: String,
    pub sql: String,
    pub shape: RowShape,
    /// The table the query reads when it is the default one: absent means empty, not an error.
    pub default_table: Option<&'static str>,
}

impl SqlSource {
    pub fn payouts(custom: Option<&str>) -> SqlSource {
        match custom {
            Some(sql) => SqlSource {
                name: "--payouts-sql".into(),
                sql: sql.into(),
                shape: RowShape::Payouts,
                default_table: None,
            },
            None => SqlSource {
                name: "purpleflea.payouts.pending".into(),
                sql: DEFAULT_PAYOUT_SQL.into(),
                shape: RowShape::Payouts,
                default_table: Some("purpleflea.payouts.pending"),
            },
        }
    }

    pub fn actions(custom: Option<&str>) -> SqlSource {
        match custom {
            Some(sql) => SqlSource {
                name: "--actions-sql".into(),
                sql: sql.into(),
                shape: RowShape::Actions,
                default_table: None,
            },
            None => SqlSource {
                name: "purpleflea.escrow.actions".into(),
                sql: DEFAULT_ACTION_SQL.into(),
                shape: RowShape::Actions,
                default_table: Some("purpleflea.escrow.actions"),
            },
        }
    }
}

impl Source for SqlSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn read<'a>(&'a self, ctx: &'a SessionContext) -> BoxFuture<'a, Result<Vec<RawRow>, PayoutError>> {
        Box::pin(async move {
            if let Some(t) = self.default_table
                && !ctx.table_exist(t).unwrap_or(false)
            {
                return Ok(Vec::new());
            }
            let required = match self.shape {
                RowShape::Payouts => PAYOUT_COLUMNS,
                RowShape::Actions => ACTION_COLUMNS,
            };
            let batches = query(ctx, &self.name, &self.sql, required).await?;
            Ok(match self.shape {
                RowShape::Payouts => payouts_from(&batches)?.into_iter().map(RawRow::Payout).collect(),
                RowShape::Actions => actions_from(&batches)?.into_iter().map(RawRow::Action).collect(),
            })
        })
    }
}

/// The columns a payouts source must produce: those the pending table must hold (`spec.rs`).
pub const PAYOUT_COLUMNS: &[&str] = crate::tables::PENDING_PAYOUTS.required_columns();
/// The columns an escrow-actions source must produce.
pub const ACTION_COLUMNS: &[&str] = crate::tables::ESCROW_ACTIONS.required_columns();

pub const DEFAULT_PAYOUT_SQL: &str = "SELECT * FROM purpleflea.payouts.pending";
pub const DEFAULT_ACTION_SQL: &str = "SELECT * FROM purpleflea.escrow.actions";

/// Run a source query; a missing required column is a configuration error, reported before anything
/// else happens.
pub async fn query(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
    required: &[&str],
) -> Result<Vec<RecordBatch>, PayoutError> {
    let failed = |source| PayoutError::SourceQuery { source_name: name.to_string(), source };
    let df = read_only(ctx, name, sql).await?;
    let schema = df.schema().clone();
    for c in required {
        if schema.field_with_unqualified_name(c).is_err() {
            return Err(PayoutError::Source {
                source_name: name.to_string(),
                message: format!("the query must produce a column named {c} (required: {})", required.join(", ")),
            });
        }
    }
    df.collect().await.map_err(failed)
}

/// Plan a source query as a read: one that would write (into the payout log, say) is the query's fault,
/// refused before anything runs (see `tables::read_only`).
pub(super) async fn read_only(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
) -> Result<datafusion::dataframe::DataFrame, PayoutError> {
    use crate::tables::read_only::{ReadOnlyError, query};
    match query(ctx, sql).await {
        Ok(df) => Ok(df),
        Err(e @ ReadOnlyError::Write { .. }) => Err(PayoutError::Source {
            source_name: name.to_string(),
            message: format!("source queries are read-only: {e}"),
        }),
        Err(ReadOnlyError::Engine(source)) => Err(PayoutError::SourceQuery { source_name: name.to_string(), source }),
    }
}

/// Typed access to one batch's columns by name.
pub(super) struct Columns<'a> {
    batch: &'a RecordBatch,
    formatters: Vec<(String, ArrayFormatter<'a>)>,
}

impl<'a> Columns<'a> {
    pub(super) fn new(batch: &'a RecordBatch) -> Result<Columns<'a>, PayoutError> {
        let opts = FormatOptions::default();
        let mut formatters = Vec::new();
        for (i, f) in batch.schema().fields().iter().enumerate() {
            formatters.push((f.name().clone(), ArrayFormatter::try_new(batch.column(i).as_ref(), &opts)?));
        }
        Ok(Columns { batch, formatters })
    }

    pub(super) fn column(&self, name: &str) -> Option<&'a ArrayRef> {
        self.batch.column_by_name(name)
    }

    pub(super) fn text(&self, name: &str) -> Result<Option<StringArray>, PayoutError> {
        let Some(c) = self.column(name) else { return Ok(None) };
        let cast = arrow::compute::cast(c, &DataType::Utf8)?;
        Ok(cast.as_any().downcast_ref::<StringArray>().cloned())
    }

    pub(super) fn times(&self, name: &str) -> Option<TimestampMicrosecondArray> {
        let c = self.column(name)?;
        let cast = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))).ok()?;
        cast.as_any().downcast_ref::<TimestampMicrosecondArray>().cloned()
    }

    /// The row as JSON text, for the rejects table (each value as it displays, clipped). A clipped value,
    /// and a row clipped as a whole, end with a digest of what was cut: the text still tells two versions
    /// of a row apart, and a refusal is recorded once per version (see `log::RejectVersion`).
    pub(super) fn row_json(&self, i: usize) -> String {
        let mut m = Map::new();
        for (name, f) in &self.formatters {
            let col = self.batch.column_by_name(name);
            let v = if col.is_some_and(|c| c.is_null(i)) {
                Value::Null
            } else {
                Value::String(clip_marked(&f.value(i).to_string(), 512))
            };
            m.insert(name.clone(), v);
        }
        clip_marked(&Value::Object(m).to_string(), MAX_SOURCE_ROW_BYTES)
    }
}

pub(super) fn get(a: &Option<StringArray>, i: usize) -> Option<String> {
    a.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i).to_string())
}

pub(super) fn time(a: &Option<TimestampMicrosecondArray>, i: usize) -> Option<DateTime<Utc>> {
    a.as_ref().filter(|a| !a.is_null(i)).and_then(|a| Utc.timestamp_micros(a.value(i)).single())
}

fn not_typed(t: &str) -> PayoutError {
    PayoutError::Source { source_name: "amount_usd".into(), message: format!("a {t} column that is not stored as one") }
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
            let a = c.as_any().downcast_ref::<Decimal128Array>().ok_or_else(|| not_typed("decimal"))?;
            each(&|i| Usd::from_decimal128(a.value(i), *scale))
        }
        DataType::Float64 => {
            let a = c.as_any().downcast_ref::<Float64Array>().ok_or_else(|| not_typed("double"))?;
            each(&|i| Usd::from_f64_exact(a.value(i)))
        }
        DataType::Float32 => {
            let a = c.as_any().downcast_ref::<Float32Array>().ok_or_else(|| not_typed("float"))?;
            // The float's own shortest decimal form, not its widened double's.
            each(&|i| Usd::parse(&a.value(i).to_string()))
        }
        DataType::Int64 => {
            let a = c.as_any().downcast_ref::<Int64Array>().ok_or_else(|| not_typed("bigint"))?;
            each(&|i| dollars(a.value(i)))
        }
        DataType::Int32 => {
            let a = c.as_any().downcast_ref::<Int32Array>().ok_or_else(|| not_typed("int"))?;
            each(&|i| dollars(a.value(i) as i64))
        }
        DataType::Int16 => {
            let a = c.as_any().downcast_ref::<Int16Array>().ok_or_else(|| not_typed("smallint"))?;
            each(&|i| dollars(a.value(i) as i64))
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            let cast = arrow::compute::cast(c, &DataType::Utf8)?;
            let a = cast.as_any().downcast_ref::<StringArray>().ok_or_else(|| not_typed("text"))?;
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
