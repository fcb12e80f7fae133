//! Refused source rows as the report shows them (`refused_rows.sql` over `purpleflea.payouts.rejects`): one
//! line per row and reason, with how often and when it was refused.

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};

use super::ReconcileError;
use super::decode::decode;
use super::matching::REFUSED_ROWS;

#[derive(Debug, Clone, PartialEq)]
pub struct RefusedRow {
    /// The row's payout_id or action_id; none when the row had none.
    pub operation_id: Option<String>,
    pub kind: String,
    pub code: String,
    pub message: String,
    pub refusals: u64,
    pub first_refused_at: DateTime<Utc>,
    pub last_refused_at: DateTime<Utc>,
}

pub fn rows(batches: &[RecordBatch]) -> Result<Vec<RefusedRow>, ReconcileError> {
    decode(&REFUSED_ROWS, batches, &["operation_id", "kind", "code"], |r| {
        Ok(RefusedRow {
            operation_id: r.opt_text("operation_id")?,
            kind: r.text("kind")?,
            code: r.text("code")?,
            message: r.text("message")?,
            refusals: r.count("refusals")?,
            first_refused_at: r.timestamp("first_refused_at")?,
            last_refused_at: r.timestamp("last_refused_at")?,
        })
    })
}
