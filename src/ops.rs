//! `purpleflea.ops.runs`: one summary row per step of every run, so an auditor can list what ran, when,
//! what it did and how it ended, next to the findings and the log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::money::Usd;
use crate::tables::row::{Row, table_row};
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

table_row! {
    /// One row of `purpleflea.ops.runs`.
    pub struct RunRow: RUNS, key(run_id, step) {
        pub run_id: String,
        pub step: String,
        pub started_at: DateTime<Utc>,
        pub finished_at: DateTime<Utc>,
        pub rows: Option<i64>,
        pub amount_usd: Option<Usd>,
        /// Counts per outcome or finding class, as a JSON object.
        pub counts: Option<String>,
        pub exit_code: i32,
    }
}

impl RunRow {
    pub fn new(run_id: &str, r: &RunRecord) -> RunRow {
        RunRow {
            run_id: run_id.to_string(),
            step: r.step.to_string(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            rows: r.rows,
            amount_usd: r.amount,
            counts: Some(serde_json::to_string(&r.counts).unwrap_or_else(|_| "{}".into())),
            exit_code: r.exit_code,
        }
    }
}

pub async fn record(wh: &Warehouse, commit: &CommitInfo, r: &RunRecord) -> Result<(), TableError> {
    let table = open_or_create(wh, &RUNS, commit).await?;
    let batch = RunRow::to_batch(&[RunRow::new(&commit.run_id, r)]).map_err(|e| TableError::Query(e.to_string()))?;
    table
        .write(vec![batch])
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| TableError::Query(format!("writing {}: {e}", RUNS.name)))?;
    Ok(())
}
