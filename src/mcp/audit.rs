//! `purpleflea.ops.mcp_calls`: one row per tool call, written before the answer goes back, so an auditor can
//! tie an agent's request (client, request id) to the operation it became (`operation_id`, which joins the
//! payout log and the status view) and to the money it moved.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use deltalake::DeltaTable;

use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::tables::{CommitInfo, MCP_CALLS, TableError, Warehouse, open_or_create};

/// Longest text kept of the arguments and the result.
pub const MAX_TEXT: usize = 4096;

#[derive(Debug, Clone)]
pub struct CallRecord {
    pub tool: String,
    pub client: String,
    pub client_info: Option<String>,
    pub transport: &'static str,
    pub request_id: Option<String>,
    pub operation_id: Option<String>,
    pub arguments: String,
    pub decision: &'static str,
    pub amount: Option<Usd>,
    pub is_error: bool,
    pub result: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Clip to at most `MAX_TEXT` bytes on a character boundary.
pub fn clip(text: &str) -> String {
    crate::text::clip(text, MAX_TEXT).to_string()
}

/// Append one row. `cached` holds the table between calls (opening it reads its whole log, which grows by a
/// commit per call); it is dropped after a failed write and opened afresh on the next.
pub async fn record(
    wh: &Warehouse,
    commit: &CommitInfo,
    cached: &mut Option<DeltaTable>,
    r: &CallRecord,
) -> Result<(), TableError> {
    let table = match cached.take() {
        Some(t) => t,
        None => open_or_create(wh, &MCP_CALLS, commit).await?,
    };
    let err = |e: arrow::error::ArrowError| TableError::Query(e.to_string());
    let call_id = uuid::Uuid::now_v7().to_string();
    let ts =
        |t: DateTime<Utc>| Arc::new(TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC"));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![call_id.as_str()])),
        Arc::new(StringArray::from(vec![r.tool.as_str()])),
        Arc::new(StringArray::from(vec![r.client.as_str()])),
        Arc::new(StringArray::from(vec![r.client_info.as_deref()])),
        Arc::new(StringArray::from(vec![r.transport])),
        Arc::new(StringArray::from(vec![r.request_id.as_deref()])),
        Arc::new(StringArray::from(vec![r.operation_id.as_deref()])),
        Arc::new(StringArray::from(vec![clip(&r.arguments)])),
        Arc::new(StringArray::from(vec![r.decision])),
        Arc::new(
            Decimal128Array::from(vec![r.amount.map(Usd::to_decimal128)])
                .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)
                .map_err(err)?,
        ),
        Arc::new(BooleanArray::from(vec![r.is_error])),
        Arc::new(StringArray::from(vec![clip(&r.result)])),
        ts(r.started_at),
        ts(r.finished_at),
    ];
    let batch = RecordBatch::try_new(MCP_CALLS.arrow_schema(), columns).map_err(err)?;
    let written = table
        .write(vec![batch])
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| TableError::Query(format!("writing {}: {e}", MCP_CALLS.name)))?;
    *cached = Some(written);
    Ok(())
}
