//! `purpleflea.ops.runs`: one summary row per step of every run, so an auditor can list what ran, when,
//! what it did and how it ended, next to the findings and the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use chrono::{DateTime, Utc};

use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::tables::{CommitInfo, RUNS, TableError, Warehouse, open_or_create};

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub step: &'static str,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub rows: Option<i64>,
    pub amount: Option<Usd>,
    pub counts: BTreeMap<String, u64>,
    pub exit_code: i32,
}

pub async fn record(wh: &Warehouse, commit: &CommitInfo, r: &RunRecord) -> Result<(), TableError> {
    let table = open_or_create(wh, &RUNS, commit).await?;
    let counts = serde_json::to_string(&r.counts).unwrap_or_else(|_| "{}".into());
    let err = |e: arrow::error::ArrowError| TableError::Query(e.to_string());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![commit.run_id.as_str()])),
        Arc::new(StringArray::from(vec![r.step])),
        Arc::new(TimestampMicrosecondArray::from(vec![r.started_at.timestamp_micros()]).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![r.finished_at.timestamp_micros()]).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![r.rows])),
        Arc::new(
            Decimal128Array::from(vec![r.amount.map(Usd::to_decimal128)])
                .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)
                .map_err(err)?,
        ),
        Arc::new(StringArray::from(vec![counts.as_str()])),
        Arc::new(Int32Array::from(vec![r.exit_code])),
    ];
    let batch = RecordBatch::try_new(RUNS.arrow_schema(), columns).map_err(err)?;
    table
        .write(vec![batch])
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| TableError::Query(format!("writing {}: {e}", RUNS.name)))?;
    Ok(())
}
