//! Where a request stands: from its log rows once the engine logged it (folded by the engine's own status
//! machine), else from the rejects table (refused before anything moved), else queued or unknown. What
//! `payout_status` answers, and what a money tool answers after the engine ran its operation.

use arrow::array::TimestampMicrosecondArray;
use serde_json::{Map, Value, json};

use super::dispatch::Engine;
use super::error::McpError;
use super::query::{collect, log_rows};
use crate::payouts::log::RejectRow;
use crate::payouts::state::{StatusName, Summary};
use crate::payouts::validate::RejectCode;
use crate::tables::row::{Row, Text};
use crate::tables::{PAYOUT_LOG, REJECTS};

/// What a create's status reads as when this server knows nothing of it.
const UNKNOWN_HERE: &str = "unknown to this server";

/// A request's status, with its values typed.
#[derive(Debug, Clone)]
pub enum RequestStatus {
    /// The engine logged it: its events folded.
    Logged(Box<Summary>),
    /// Validation refused its row before anything moved.
    Refused { op: String, code: RejectCode, message: String },
    /// Written, not yet run: the scheduled job runs it.
    Queued { op: String },
}

impl RequestStatus {
    /// The status the agent reads (`None`: logged, with no status yet).
    pub fn name(&self) -> Option<&'static str> {
        match self {
            RequestStatus::Logged(s) => s.status.name().map(StatusName::as_str),
            RequestStatus::Refused { .. } => Some("refused"),
            RequestStatus::Queued { .. } => Some("queued"),
        }
    }

    /// A refusal (by the provider, or by validation) as a money tool's error.
    pub fn refusal(&self) -> Option<McpError> {
        let (message, code) = match self {
            RequestStatus::Logged(s) if s.status.name() == Some(StatusName::Rejected) => {
                (s.error_message.as_deref().unwrap_or("no message"), s.error_code.as_deref().unwrap_or("no code"))
            }
            RequestStatus::Refused { code, message, .. } => (message.as_str(), code.as_str()),
            _ => return None,
        };
        Some(McpError::Refused { message: message.to_string(), code: code.to_string() })
    }

    /// The answer: the status view's columns, amounts exact, absent values left out.
    pub fn to_json(&self) -> Result<Value, McpError> {
        match self {
            RequestStatus::Logged(s) => summary_json(s),
            RequestStatus::Refused { op, code, message } => Ok(json!({
                "operation_id": op,
                "status": "refused",
                "error_code": code.as_str(),
                "error_message": message,
            })),
            RequestStatus::Queued { op } => {
                Ok(json!({"operation_id": op, "status": "queued", "detail": "waiting for the scheduled payouts job"}))
            }
        }
    }
}

fn summary_json(s: &Summary) -> Result<Value, McpError> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    let text = |v: &Option<String>| v.as_ref().map(|t| json!(t));
    put("operation_id", Some(json!(s.operation_id)));
    put("kind", Some(json!(s.kind.as_str())));
    put("status", s.status.name().map(|n| json!(n.as_str())));
    put("tx_id", text(&s.tx_id));
    put("escrow_id", text(&s.escrow_id));
    put("agent_id", text(&s.agent_id));
    put("counterparty_agent_id", text(&s.counterparty_agent_id));
    put("amount_usd", s.amount_usd.map(|a| json!(a.to_string())));
    put("error_code", text(&s.error_code));
    put("error_message", text(&s.error_message));
    put("attempts", Some(json!(s.attempts)));
    // As the status view's timestamp reads in JSON.
    let at = TimestampMicrosecondArray::from(vec![s.last_recorded_at.timestamp_micros()]).with_timezone("UTC");
    let at = arrow::util::display::array_value_to_string(&at, 0)?;
    put("last_recorded_at", Some(json!(at)));
    Ok(Value::Object(m))
}

impl Engine {
    /// An operation's status; an operation this server knows nothing of is an error.
    pub(super) async fn status_of(&self, op: &str) -> Result<RequestStatus, McpError> {
        // One session for the log and the rejects table (each open reads a table's log).
        let ctx = self.ctx_for("purpleflea.payouts.log purpleflea.payouts.rejects").await?;
        if ctx.table_exist(PAYOUT_LOG.name).unwrap_or(false) {
            let sql = format!("SELECT * FROM purpleflea.payouts.log WHERE operation_id = '{op}'");
            if let Some(summary) = Summary::of(&log_rows(&ctx, &sql).await?) {
                return Ok(RequestStatus::Logged(Box::new(summary)));
            }
        }
        if ctx.table_exist(REJECTS.name).unwrap_or(false) {
            let sql = format!(
                "SELECT * FROM purpleflea.payouts.rejects WHERE operation_id = '{op}' ORDER BY rejected_at DESC LIMIT 1"
            );
            if let Some(r) = RejectRow::from_batches(&collect(&ctx, &sql).await?)?.into_iter().next() {
                return Ok(RequestStatus::Refused { op: op.to_string(), code: r.code, message: r.message });
            }
        }
        if self.queued(op).await?.is_some() {
            Ok(RequestStatus::Queued { op: op.to_string() })
        } else {
            Err(McpError::NoSuchRequest(op.to_string()))
        }
    }

    /// The escrow a create made, once the create completed; else the create's status (what the agent is
    /// told it waits for). A release, dispute or complete naming its escrow by the create runs only then:
    /// a queued create is the scheduled job's to run, not this call's.
    pub(super) async fn completed_create(&self, create: &str) -> Result<Option<String>, String> {
        let status = self.status_of(create).await.ok();
        match status.as_ref().and_then(RequestStatus::name) {
            Some("completed") => match status {
                Some(RequestStatus::Logged(s)) => Ok(s.escrow_id.clone()),
                _ => Ok(None),
            },
            state => Err(state.unwrap_or(UNKNOWN_HERE).to_string()),
        }
    }
}
