//! `purpleflea.ops.mcp_calls`: one row per tool call, written before the answer goes back, so an auditor can
//! tie an agent's request (client, request id) to the operation it became (`operation_id`, which joins the
//! payout log and the status view) and to the money it moved.

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;

use crate::money::Usd;
use crate::tables::row::{Row, table_row};
use crate::tables::{CommitInfo, MCP_CALLS, TableError, Warehouse, open_or_create};

/// Longest text kept of the arguments and the result.
pub const MAX_TEXT: usize = 4096;

table_row! {
    /// One row of `purpleflea.ops.mcp_calls`: one tool call. `arguments` and `result` are clipped to
    /// [`MAX_TEXT`] when recorded.
    pub struct CallRecord: MCP_CALLS, key(call_id, tool) {
        pub call_id: String,
        pub tool: String,
        pub client: String,
        pub client_info: Option<String>,
        pub transport: String,
        pub request_id: Option<String>,
        pub operation_id: Option<String>,
        pub arguments: String,
        pub decision: String,
        pub amount_usd: Option<Usd>,
        pub is_error: bool,
        pub result: Option<String>,
        pub started_at: DateTime<Utc>,
        pub finished_at: DateTime<Utc>,
    }
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
    let clipped = CallRecord { arguments: clip(&r.arguments), result: r.result.as_deref().map(clip), ..r.clone() };
    let batch = CallRecord::to_batch(&[clipped]).map_err(|e| TableError::Query(e.to_string()))?;
    let written = table
        .write(vec![batch])
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| TableError::Query(format!("writing {}: {e}", MCP_CALLS.name)))?;
    *cached = Some(written);
    Ok(())
}
