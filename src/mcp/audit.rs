//! `purpleflea.ops.mcp_calls`: one row per tool call, written before the answer goes back, so an auditor can
//! tie an agent's request (client, request id) to the operation it became (`operation_id`, which joins the
//! payout log and the status view) and to the money it moved.

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;

use super::policy::Decision;
use crate::money::Usd;
use crate::tables::row::{Row, Text, table_row};
use crate::tables::{CommitInfo, MCP_CALLS, TableError, Warehouse, open_or_create};

/// What the server decided about a call: the `decision` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDecision {
    /// A read tool answered (or failed to).
    Read,
    /// The policy ran it now.
    Execute,
    /// The policy queued it for the scheduled payouts job.
    Queue,
    /// The policy denies the tool.
    Deny,
    /// The allowlists or a limit refused it.
    Refused,
    /// The request id was used before: the first result, or a refusal of a different request.
    Replayed,
    /// The arguments were refused, or the tool is unknown.
    Invalid,
    /// Reading or writing the tables failed before the call was decided.
    Error,
}

impl CallDecision {
    const ALL: [CallDecision; 8] = [
        CallDecision::Read,
        CallDecision::Execute,
        CallDecision::Queue,
        CallDecision::Deny,
        CallDecision::Refused,
        CallDecision::Replayed,
        CallDecision::Invalid,
        CallDecision::Error,
    ];
}

impl Text for CallDecision {
    const WHAT: &'static str = "an MCP call decision (read, execute, queue, deny, refused, replayed, invalid, error)";
    fn as_str(self) -> &'static str {
        match self {
            CallDecision::Read => "read",
            CallDecision::Execute => "execute",
            CallDecision::Queue => "queue",
            CallDecision::Deny => "deny",
            CallDecision::Refused => "refused",
            CallDecision::Replayed => "replayed",
            CallDecision::Invalid => "invalid",
            CallDecision::Error => "error",
        }
    }
    fn parse(s: &str) -> Option<CallDecision> {
        CallDecision::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl From<Decision> for CallDecision {
    fn from(d: Decision) -> CallDecision {
        match d {
            Decision::Execute => CallDecision::Execute,
            Decision::Queue => CallDecision::Queue,
            Decision::Deny => CallDecision::Deny,
        }
    }
}

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
        pub decision: CallDecision,
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
