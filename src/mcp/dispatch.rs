//! One call: its tool parsed once, its arguments checked against the tool's schema, the path its kind takes
//! (read, money, direct), and its row in `purpleflea.ops.mcp_calls` written before the answer goes back.

use std::sync::Arc;

use chrono::Utc;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value};

use super::args::Args;
use super::audit::{self, CallDecision, CallRecord};
use super::error::McpError;
use super::policy::{self, McpSection};
use super::tool::{Kind, Tool};
use crate::money::Usd;
use crate::payouts::PayoutOptions;
use crate::provider::Provider;
use crate::tables::row::Text;
use crate::tables::{CommitInfo, Warehouse};

/// Everything a call needs: the warehouse, the provider, who the client is, and the policy.
pub struct Engine {
    pub wh: Warehouse,
    pub provider: Arc<dyn Provider>,
    /// The client name this server was started for (`--client`): `requested_by` is `mcp:<client>`.
    pub client: String,
    pub transport: &'static str,
    pub policy: McpSection,
    /// The options a `pfsync payouts` run would have (namespace, send budget); sources are set per call.
    pub opts: PayoutOptions,
    /// Governed tools one at a time: the daily limit is checked and the row written with nothing in between.
    pub(super) money: tokio::sync::Mutex<()>,
    /// The audit table, kept open between calls.
    audit: tokio::sync::Mutex<Option<deltalake::DeltaTable>>,
}

/// What one call came to, for the agent and the audit row.
pub(super) struct Outcome {
    pub decision: CallDecision,
    pub request_id: Option<String>,
    pub operation_id: Option<String>,
    pub amount: Option<Usd>,
    pub result: Result<Value, McpError>,
}

impl Outcome {
    fn read(result: Result<Value, McpError>) -> Outcome {
        Outcome { decision: CallDecision::Read, request_id: None, operation_id: None, amount: None, result }
    }

    fn invalid(e: McpError) -> Outcome {
        Outcome { decision: CallDecision::Invalid, request_id: None, operation_id: None, amount: None, result: Err(e) }
    }

    /// The request id (`request_id`, checked) and the operation it names.
    pub fn ids(&self) -> (&str, &str) {
        (self.request_id.as_deref().unwrap_or_default(), self.operation_id.as_deref().unwrap_or_default())
    }
}

impl Engine {
    pub fn new(
        wh: Warehouse,
        provider: Arc<dyn Provider>,
        client: String,
        transport: &'static str,
        policy: McpSection,
        opts: PayoutOptions,
    ) -> Engine {
        Engine {
            wh,
            provider,
            client,
            transport,
            policy,
            opts,
            money: tokio::sync::Mutex::new(()),
            audit: tokio::sync::Mutex::new(None),
        }
    }

    /// Answer one call and record it in `purpleflea.ops.mcp_calls`.
    pub async fn call(&self, name: &str, args: Map<String, Value>, client_info: Option<String>) -> CallToolResult {
        let started_at = Utc::now();
        let tool = Tool::parse(name);
        let args = Args::new(&args);
        let outcome = match tool {
            None => Outcome::invalid(McpError::NoSuchTool { name: name.chars().take(64).collect() }),
            Some(t) => match args.check_declared(t) {
                Err(e) => Outcome::invalid(e.into()),
                Ok(()) => self.dispatch(t, &args).await,
            },
        };
        let (is_error, result_text) = match &outcome.result {
            Ok(v) => (false, v.to_string()),
            Err(e) => (true, e.to_string()),
        };
        let record = CallRecord {
            call_id: uuid::Uuid::now_v7().to_string(),
            tool: name.chars().take(64).collect(),
            client: self.client.clone(),
            client_info,
            transport: self.transport.to_string(),
            request_id: outcome.request_id.clone(),
            operation_id: outcome.operation_id.clone(),
            arguments: args.audited(tool),
            decision: outcome.decision,
            amount_usd: outcome.amount,
            is_error,
            result: Some(result_text.clone()),
            started_at,
            finished_at: Utc::now(),
        };
        let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "mcp" };
        if let Err(e) = audit::record(&self.wh, &commit, &mut *self.audit.lock().await, &record).await {
            tracing::warn!(error = %e, tool = %record.tool, "could not record the call in purpleflea.ops.mcp_calls");
        }
        tracing::info!(
            tool = %record.tool,
            client = %self.client,
            decision = outcome.decision.as_str(),
            operation_id = outcome.operation_id.as_deref().unwrap_or("-"),
            is_error,
            "mcp call"
        );
        match outcome.result {
            Ok(v) => CallToolResult::structured(v),
            Err(_) => CallToolResult::error(vec![ContentBlock::text(result_text)]),
        }
    }

    async fn dispatch(&self, tool: Tool, args: &Args<'_>) -> Outcome {
        match tool {
            Tool::CheckBalance => Outcome::read(self.check_balance(args).await),
            Tool::CheckEscrowStatus | Tool::GetEscrow => Outcome::read(self.escrow(args).await),
            Tool::PayoutStatus => Outcome::read(self.payout_status(args).await),
            Tool::OpenFindings => Outcome::read(self.open_findings(args).await),
            Tool::RequestPayout
            | Tool::CreateEscrow
            | Tool::ReleaseEscrow
            | Tool::DisputeEscrow
            | Tool::MarkComplete
            | Tool::ClaimFaucet => self.governed(tool, args).await,
        }
    }

    /// A governed call: its request id checked first, since its audit row names the request and the
    /// operation from there on, whatever comes next; then the path of its kind.
    async fn governed(&self, tool: Tool, args: &Args<'_>) -> Outcome {
        let request_id = match args.request_id() {
            Ok(r) => r,
            Err(e) => return Outcome::invalid(e.into()),
        };
        let mut out = Outcome {
            decision: CallDecision::Invalid,
            operation_id: Some(policy::operation_id(&self.client, &request_id)),
            request_id: Some(request_id),
            amount: None,
            result: Ok(Value::Null),
        };
        out.result = match tool.kind() {
            Kind::Direct => self.direct(tool, args, &mut out).await,
            _ => self.money(tool, args, &mut out).await,
        };
        out
    }
}
