//! The tools: names and arguments follow the seed's (`create_escrow`, `release_escrow`, `check_escrow_status`,
//! `claim_faucet`, `check_balance`) and Purple Flea's live escrow and faucet MCP servers' (`get_escrow`,
//! `mark_complete`, `dispute_escrow`; `agent_casino_id`), without their `casino_api_key` argument: the server
//! holds the keys.
//!
//! Read tools answer from the synced Delta tables (read-only SQL, every value checked against the id rule
//! before it is put in a query). Money tools become operations of the exactly-once engine: the operation id
//! is `mcp:<client>:<request_id>`, so an agent's retry with the same request id is the same operation and
//! returns the first result; the policy decides, and the limits hold, before a row is written.
//!
//! `claim_faucet` and `mark_complete` are no operations of the engine (the platform pays a faucet claim, and
//! completing an escrow moves no money): they act on the provider at once, under the policy (`execute` or
//! `deny`), once per request id. Their first result is the audit row of the call that made it; that they
//! never act twice rests on what the provider declares (see `crate::provider::agent`).

use std::sync::Arc;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use chrono::Utc;
use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

use super::audit::{self, CallRecord};
use super::policy::{self, Decision, McpSection};
use crate::http::IdempotencyKey;
use crate::money::Usd;
use crate::payouts::log::{LogEvent, RejectRow};
use crate::payouts::requested::{EscrowActionRow, PendingPayoutRow};
use crate::payouts::state::Summary;
use crate::payouts::{PayoutOptions, PayoutReport, run_payouts};
use crate::progress::Progress;
use crate::provider::{FaucetAnswer, Provider};
use crate::tables::row::{Row, Text};
use crate::tables::{
    ALL, CommitInfo, ESCROW_ACTIONS, MCP_CALLS, PAYOUT_LOG, PENDING_PAYOUTS, RECONCILIATION, REJECTS, TableSpec,
    Warehouse, open_or_create, sql_context_of,
};

pub const INSTRUCTIONS: &str = "Purple Flea payments through pfsync. Read tools (check_balance, check_escrow_status, \
get_escrow, payout_status, open_findings) answer from the lakehouse copy, with the time of the last sync (live: true \
asks the provider now). Money tools (request_payout, create_escrow, release_escrow, dispute_escrow, claim_faucet, \
mark_complete) need a request_id you choose: calling again with the same request_id returns the first result and \
never moves money twice, so retry with the SAME id after a timeout. An escrow's life: create_escrow (buyer), \
mark_complete (seller, when the task is done; live provider only), release_escrow (pays the seller). \
A refusal (policy, limits, allowlist) comes back as a tool error whose text says why; nothing moved.";

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
    /// Money tools one at a time: the daily limit is checked and the row written with nothing in between.
    money: tokio::sync::Mutex<()>,
    /// The audit table, kept open between calls.
    audit: tokio::sync::Mutex<Option<deltalake::DeltaTable>>,
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

    fn requested_by(&self) -> String {
        format!("mcp:{}", self.client)
    }
}

fn schema(properties: Value, required: &[&str]) -> Arc<Map<String, Value>> {
    let v = json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

fn tool(name: &'static str, description: &'static str, properties: Value, required: &[&str], money: bool) -> Tool {
    let mut t = Tool::new(name, description, schema(properties, required));
    let mut a = ToolAnnotations::default();
    a.read_only_hint = Some(!money);
    a.destructive_hint = Some(money);
    a.idempotent_hint = Some(true);
    a.open_world_hint = Some(money);
    t.annotations = Some(a);
    t
}

const LIVE: &str = "true: ask the payments provider now instead of the last sync (with the live provider, a balance \
only of an agent whose key pfsync holds). Slower; use it when the synced copy may be stale.";

const REQUEST_ID: &str = "Your id for this request, 1-64 characters of letters, digits, '.', '_' and '-'. Calling \
again with the same request_id returns the first result and never moves money twice: reuse it when you retry.";

/// Every tool, with its JSON schema.
pub fn definitions() -> Vec<Tool> {
    let agent = |d: &str| json!({"type": "string", "description": d, "maxLength": 128});
    vec![
        tool(
            "check_balance",
            "An agent's Purple Flea wallet as of the last sync (the purpleflea.agents.wallets table): balance_usd, \
             total_earned_usd, active_escrow_count, and last_synced_at (when pfsync last wrote the row) with \
             wallets_synced_at (the newest sync of the table). Read-only.",
            json!({
                "agent_id": agent("The agent whose balance to read, e.g. agent-000001"),
                "live": {"type": "boolean", "default": false, "description": LIVE}
            }),
            &["agent_id"],
            false,
        ),
        tool(
            "check_escrow_status",
            "An escrow's status (funded, released, refunded; live also completed, disputed), amount and parties as \
             of the last sync (the purpleflea.agents.escrows table), with last_synced_at. Read-only.",
            json!({"escrow_id": agent("The escrow id, as create_escrow returned it"), "live": {"type": "boolean", "default": false, "description": LIVE}}),
            &["escrow_id"],
            false,
        ),
        tool(
            "get_escrow",
            "The same as check_escrow_status (the name Purple Flea's escrow server uses): an escrow as of the last \
             sync. Read-only.",
            json!({"escrow_id": agent("The escrow id"), "live": {"type": "boolean", "default": false, "description": LIVE}}),
            &["escrow_id"],
            false,
        ),
        tool(
            "payout_status",
            "The status of a money request: queued (waiting for the scheduled job), in_flight, completed (with \
             tx_id or escrow_id), rejected (with error_code and error_message) or unknown (being resolved; never \
             paid twice). Give the request_id you used, or an operation_id from the payout log. Read-only.",
            json!({
                "request_id": {"type": "string", "description": "The request_id of your earlier money tool call", "maxLength": 64},
                "operation_id": agent("Or: any operation id of purpleflea.payouts.log")
            }),
            &[],
            false,
        ),
        tool(
            "open_findings",
            "Open reconciliation findings (the purpleflea.payouts.open_findings view): money pfsync logged that the \
             provider does not show the same way, balances that do not add up. Read-only.",
            json!({
                "class": {"type": "string", "description": "Only this class, e.g. amount_mismatch, stale_unknown", "maxLength": 64},
                "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20, "description": "At most this many findings"}
            }),
            &[],
            false,
        ),
        tool(
            "request_payout",
            "Pay an agent from the treasury, exactly once per request_id. Depending on the server's policy it is \
             paid now (returns status completed and tx_id), queued for the scheduled payout job (returns status \
             queued), or refused. Limits per call and per day, and an allowlist of agents, apply before anything \
             moves; a refusal says why.",
            json!({
                "request_id": {"type": "string", "description": REQUEST_ID, "maxLength": 64},
                "agent_id": agent("The agent to pay"),
                "amount_usd": {"type": "number", "exclusiveMinimum": 0, "description": "Amount in USD, at most 2 decimals, e.g. 12.50"},
                "reason": {"type": "string", "maxLength": 4096, "description": "Why the agent is paid (recorded with the payout)"}
            }),
            &["request_id", "agent_id", "amount_usd", "reason"],
            true,
        ),
        tool(
            "create_escrow",
            "Lock amount_usd from buyer_agent_id in an escrow for counterparty_agent_id (the seller), exactly once \
             per request_id. Returns the escrow_id when the policy runs it now, or status queued. Release it with \
             release_escrow when the work is done, or dispute_escrow to return the money to the buyer.",
            json!({
                "request_id": {"type": "string", "description": REQUEST_ID, "maxLength": 64},
                "buyer_agent_id": agent("The agent whose funds are locked"),
                "counterparty_agent_id": agent("The agent paid on release (the seller)"),
                "amount_usd": {"type": "number", "exclusiveMinimum": 0, "description": "Amount in USD, at most 2 decimals"},
                "description": {"type": "string", "maxLength": 4096, "description": "The task or agreement"},
                "timeout_hours": {"type": "integer", "minimum": 1, "maximum": 720, "description": "Hours until the escrow may be refunded (live provider)"}
            }),
            &["request_id", "buyer_agent_id", "counterparty_agent_id", "amount_usd", "description"],
            true,
        ),
        tool(
            "release_escrow",
            "Release a funded escrow to its seller, exactly once per request_id: calling it again with the same \
             request_id returns the first result and releases nothing more. Give escrow_id, or create_request_id \
             (the request_id of the create_escrow call) when the escrow id is not known yet.",
            json!({
                "request_id": {"type": "string", "description": REQUEST_ID, "maxLength": 64},
                "escrow_id": agent("The escrow to release"),
                "create_request_id": {"type": "string", "maxLength": 64, "description": "Or: the request_id of your create_escrow call"},
                "reason": {"type": "string", "maxLength": 4096, "description": "Why (recorded with the release)"}
            }),
            &["request_id"],
            true,
        ),
        tool(
            "dispute_escrow",
            "Dispute a funded escrow (the seed's provider refunds the buyer; the live one freezes it for review), \
             exactly once per request_id. Give escrow_id, or create_request_id.",
            json!({
                "request_id": {"type": "string", "description": REQUEST_ID, "maxLength": 64},
                "escrow_id": agent("The escrow to dispute"),
                "create_request_id": {"type": "string", "maxLength": 64, "description": "Or: the request_id of your create_escrow call"},
                "reason": {"type": "string", "maxLength": 4096, "description": "What went wrong"}
            }),
            &["request_id", "reason"],
            true,
        ),
        tool(
            "mark_complete",
            "The seller's side of an escrow: mark the task done (funded -> completed), so the buyer can release it. \
             Acts as the escrow's counterparty (seller), whose key pfsync must hold; exactly once per request_id \
             (calling again returns the first result). Only the live provider has this step: the seed's API \
             releases a funded escrow directly (use release_escrow). Give escrow_id, or create_request_id.",
            json!({
                "request_id": {"type": "string", "description": REQUEST_ID, "maxLength": 64},
                "escrow_id": agent("The escrow whose task is done (esc_... on the live provider)"),
                "create_request_id": {"type": "string", "maxLength": 64, "description": "Or: the request_id of your create_escrow call"}
            }),
            &["request_id"],
            true,
        ),
        tool(
            "claim_faucet",
            "Claim the Purple Flea faucet's free startup funds for an agent (the provider credits each agent once: \
             $1 at the live faucet, only for agents without deposits; registration usually claims it already). \
             Exactly once per request_id: calling again returns the first result. Returns status credited with \
             amount_usd and claim_id; a claim the provider refuses (already claimed) is a tool error saying so. \
             Give agent_id, or agent_casino_id (the same id, as Purple Flea's faucet names it).",
            json!({
                "request_id": {"type": "string", "description": REQUEST_ID, "maxLength": 64},
                "agent_id": agent("The agent to credit, e.g. agent-000001 or ag_0123456789ab"),
                "agent_casino_id": agent("Or: the same agent id, under the name Purple Flea's faucet uses")
            }),
            &["request_id"],
            true,
        ),
    ]
}

/// What one call came to, for the agent and the audit row.
struct Outcome {
    decision: &'static str,
    request_id: Option<String>,
    operation_id: Option<String>,
    amount: Option<Usd>,
    result: Result<Value, String>,
}

impl Outcome {
    fn read(result: Result<Value, String>) -> Outcome {
        Outcome { decision: "read", request_id: None, operation_id: None, amount: None, result }
    }

    fn invalid(message: String) -> Outcome {
        Outcome { decision: "invalid", request_id: None, operation_id: None, amount: None, result: Err(message) }
    }

    /// A money call whose request id is known, before its arguments are checked.
    fn for_request(request_id: String, operation_id: String) -> Outcome {
        Outcome {
            decision: "invalid",
            request_id: Some(request_id),
            operation_id: Some(operation_id),
            amount: None,
            result: Err(String::new()),
        }
    }
}

/// Arguments as the audit keeps them: those the tool declares; any other is named, its value dropped (an
/// agent used to Purple Flea's own server may send its `casino_api_key`).
fn audited_arguments(tool: &str, args: &Map<String, Value>) -> String {
    let declared: Vec<String> = definitions()
        .into_iter()
        .find(|t| t.name == tool)
        .and_then(|t| t.input_schema.get("properties").and_then(|p| p.as_object()).map(|p| p.keys().cloned().collect()))
        .unwrap_or_default();
    let kept: Map<String, Value> = args
        .iter()
        .map(|(k, v)| if declared.contains(k) { (k.clone(), v.clone()) } else { (k.clone(), json!("<dropped>")) })
        .collect();
    Value::Object(kept).to_string()
}

fn text(args: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn required(args: &Map<String, Value>, name: &str) -> Result<String, String> {
    text(args, name)?.filter(|s| !s.trim().is_empty()).ok_or_else(|| format!("{name} is required"))
}

fn id_arg(args: &Map<String, Value>, name: &str) -> Result<String, String> {
    let v = required(args, name)?;
    crate::payouts::validate::check_id(&v).map_err(|e| format!("{name} {e}"))?;
    Ok(v)
}

fn free_text(args: &Map<String, Value>, name: &str, needed: bool) -> Result<Option<String>, String> {
    let v = if needed { Some(required(args, name)?) } else { text(args, name)? };
    if let Some(t) = &v {
        if t.chars().count() > 4096 {
            return Err(format!("{name} is over 4096 characters"));
        }
        if t.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            return Err(format!("{name} has a control character"));
        }
    }
    Ok(v)
}

fn amount_arg(args: &Map<String, Value>) -> Result<Usd, String> {
    let text = match args.get("amount_usd") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => return Err("amount_usd is required: a number of USD with at most 2 decimals".into()),
    };
    Usd::parse_positive(&text).map_err(|e| format!("amount_usd {text}: {e}"))
}

fn reject_unknown(tool: &str, args: &Map<String, Value>) -> Result<(), String> {
    let def = definitions().into_iter().find(|t| t.name == tool);
    let props = def.as_ref().and_then(|t| t.input_schema.get("properties").and_then(|p| p.as_object()));
    for k in args.keys() {
        if !props.is_some_and(|p| p.contains_key(k)) {
            let hint = if k.contains("key") || k.contains("token") || k.contains("secret") {
                " (no key is ever passed to this server: it holds its own)"
            } else {
                ""
            };
            return Err(format!("unknown argument {k:?}{hint}"));
        }
    }
    Ok(())
}

/// A request of a tool that acts on the provider directly, validated.
#[derive(Debug, Clone, PartialEq)]
enum DirectRequest {
    Faucet { agent_id: String },
    Complete { escrow_id: Option<String>, create_action_id: Option<String> },
}

/// What earlier calls with an operation id say about a direct tool's call.
#[derive(Debug)]
enum Prior {
    /// No call made it yet (none, or only ones that failed: those may be made again).
    Nothing,
    /// The id was used for another request; nothing more is done.
    OtherRequest,
    /// The first result.
    Done(Value),
}

/// A money request, validated.
#[derive(Debug, Clone, PartialEq)]
enum Request {
    Payout { agent_id: String, amount: Usd, reason: String },
    Create { buyer: String, seller: String, amount: Usd, description: String, metadata: Option<String> },
    Release { escrow_id: Option<String>, create_action_id: Option<String>, reason: Option<String> },
    Dispute { escrow_id: Option<String>, create_action_id: Option<String>, reason: String },
}

impl Request {
    fn amount(&self) -> Option<Usd> {
        match self {
            Request::Payout { amount, .. } | Request::Create { amount, .. } => Some(*amount),
            _ => None,
        }
    }

    /// The table the request is queued in.
    fn table(&self) -> &'static str {
        match self {
            Request::Payout { .. } => PENDING_PAYOUTS.name,
            _ => ESCROW_ACTIONS.name,
        }
    }
}

impl Engine {
    /// Answer one call and record it in `purpleflea.ops.mcp_calls`.
    pub async fn call(&self, tool: &str, args: Map<String, Value>, client_info: Option<String>) -> CallToolResult {
        let started_at = Utc::now();
        let outcome = match reject_unknown(tool, &args) {
            Err(e) if definitions().iter().any(|t| t.name == tool) => Outcome::invalid(e),
            _ => self.dispatch(tool, &args).await,
        };
        let (is_error, result_text) = match &outcome.result {
            Ok(v) => (false, v.to_string()),
            Err(m) => (true, m.clone()),
        };
        let record = CallRecord {
            call_id: uuid::Uuid::now_v7().to_string(),
            tool: tool.chars().take(64).collect(),
            client: self.client.clone(),
            client_info,
            transport: self.transport.to_string(),
            request_id: outcome.request_id.clone(),
            operation_id: outcome.operation_id.clone(),
            arguments: audited_arguments(tool, &args),
            decision: outcome.decision.to_string(),
            amount_usd: outcome.amount,
            is_error,
            result: Some(result_text),
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
            decision = outcome.decision,
            operation_id = outcome.operation_id.as_deref().unwrap_or("-"),
            is_error,
            "mcp call"
        );
        match outcome.result {
            Ok(v) => CallToolResult::structured(v),
            Err(m) => CallToolResult::error(vec![ContentBlock::text(m)]),
        }
    }

    async fn dispatch(&self, tool: &str, args: &Map<String, Value>) -> Outcome {
        match tool {
            "check_balance" => Outcome::read(self.check_balance(args).await),
            "check_escrow_status" | "get_escrow" => Outcome::read(self.escrow(args).await),
            "payout_status" => Outcome::read(self.payout_status(args).await),
            "open_findings" => Outcome::read(self.open_findings(args).await),
            "request_payout" | "create_escrow" | "release_escrow" | "dispute_escrow" => self.money(tool, args).await,
            "claim_faucet" | "mark_complete" => self.direct(tool, args).await,
            other => Outcome::invalid(format!(
                "no tool {:?}; the tools are {}",
                other.chars().take(64).collect::<String>(),
                definitions().iter().map(|t| t.name.to_string()).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// A session with only the tables `sql` names (and those under the views it names): opening a table
    /// reads its log, and a read tool should not pay for every table of the warehouse.
    async fn ctx_for(&self, sql: &str) -> Result<datafusion::prelude::SessionContext, String> {
        let specs: Vec<&TableSpec> = ALL
            .iter()
            .copied()
            .filter(|s| {
                sql.contains(s.name)
                    || (s.name == PAYOUT_LOG.name && sql.contains("purpleflea.payouts.status"))
                    || (s.name == RECONCILIATION.name && sql.contains("purpleflea.payouts.open_findings"))
            })
            .collect();
        sql_context_of(&self.wh, &specs).await.map_err(|e| format!("reading the tables failed: {e}"))
    }

    /// Rows of a read-only query as JSON objects. Every value put in `sql` has passed the id rule.
    async fn rows(&self, sql: &str) -> Result<Vec<Map<String, Value>>, String> {
        rows_in(&self.ctx_for(sql).await?, sql).await
    }

    async fn table_exists(&self, name: &str) -> Result<bool, String> {
        let ctx = self.ctx_for(name).await?;
        Ok(ctx.table_exist(name).unwrap_or(false))
    }

    fn live(args: &Map<String, Value>) -> Result<bool, String> {
        match args.get("live") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err("live must be true or false".into()),
        }
    }

    async fn check_balance(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let agent = id_arg(args, "agent_id")?;
        if Self::live(args)? {
            // A provider that answers a balance only to the agent's own key answers None for the others.
            let mut v = self.provider.wallet_now(&agent).await.map_err(|e| format!("the provider answered: {e}"))?.ok_or_else(|| {
                format!(
                    "pfsync holds no key of agent {agent}, and the provider tells a balance only to the agent's own \
                     key (held: the payer and [[provider.agent_keys]]). check_balance without live answers from the \
                     last sync"
                )
            })?;
            if let Value::Object(m) = &mut v {
                m.insert("source".into(), json!("the payments API, now"));
                m.insert("read_at".into(), json!(Utc::now().to_rfc3339()));
            }
            return Ok(v);
        }
        if !self.table_exists("purpleflea.agents.wallets").await? {
            return Err(
                "purpleflea.agents.wallets has no rows yet: the wallets have not been synced (pfsync sync)".into()
            );
        }
        let rows = self
            .rows(&format!(
                "SELECT w.agent_id, w.balance_usd, w.total_earned_usd, w.active_escrow_count, w.last_synced_at, \
                 (SELECT max(last_synced_at) FROM purpleflea.agents.wallets) AS wallets_synced_at \
                 FROM purpleflea.agents.wallets w WHERE w.agent_id = '{agent}'"
            ))
            .await?;
        match rows.into_iter().next() {
            Some(mut row) => {
                row.insert("source".into(), json!("purpleflea.agents.wallets (as of the last sync)"));
                Ok(Value::Object(row))
            }
            None => Err(format!("agent {agent} is not in purpleflea.agents.wallets (check the id, or sync again)")),
        }
    }

    async fn escrow(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let id = id_arg(args, "escrow_id")?;
        if Self::live(args)? {
            let mut v = self.provider.escrow_now(&id).await.map_err(|e| format!("the provider answered: {e}"))?;
            if let Value::Object(m) = &mut v {
                m.insert("source".into(), json!("the payments API, now"));
                m.insert("read_at".into(), json!(Utc::now().to_rfc3339()));
            }
            return Ok(v);
        }
        if !self.table_exists("purpleflea.agents.escrows").await? {
            return Err("purpleflea.agents.escrows has no rows yet: escrows have not been synced (pfsync sync)".into());
        }
        let rows = self
            .rows(&format!(
                "SELECT escrow_id, status, buyer_agent_id, seller_agent_id, CAST(amount_usd AS VARCHAR) AS amount_usd, \
                 description, created_at, updated_at, tx_id, last_synced_at \
                 FROM purpleflea.agents.escrows WHERE escrow_id = '{id}'"
            ))
            .await?;
        match rows.into_iter().next() {
            Some(mut row) => {
                row.insert("source".into(), json!("purpleflea.agents.escrows (as of the last sync)"));
                Ok(Value::Object(row))
            }
            None => Err(format!(
                "escrow {id} is not in purpleflea.agents.escrows yet (a new escrow shows after the next sync; \
                 payout_status with the create's request_id shows it now)"
            )),
        }
    }

    async fn payout_status(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let op = match (text(args, "request_id")?, text(args, "operation_id")?) {
            (Some(r), None) => {
                policy::check_request_id(&r)?;
                policy::operation_id(&self.client, &r)
            }
            (None, Some(o)) => {
                crate::payouts::validate::check_id(&o).map_err(|e| format!("operation_id {e}"))?;
                o
            }
            _ => return Err("give exactly one of request_id and operation_id".into()),
        };
        self.status_of(&op).await
    }

    /// An operation's status: from its log rows once the engine logged it (through the engine's own status
    /// machine), else from the rejects table, else queued or unknown.
    async fn status_of(&self, op: &str) -> Result<Value, String> {
        // One session for the log and the rejects table (each open reads a table's log).
        let ctx = self.ctx_for("purpleflea.payouts.log purpleflea.payouts.rejects").await?;
        if ctx.table_exist(PAYOUT_LOG.name).unwrap_or(false) {
            let sql = format!("SELECT * FROM purpleflea.payouts.log WHERE operation_id = '{op}'");
            if let Some(summary) = Summary::of(&log_rows(&ctx, &sql).await?) {
                return status_json(&summary);
            }
        }
        if ctx.table_exist(REJECTS.name).unwrap_or(false) {
            let sql = format!(
                "SELECT * FROM purpleflea.payouts.rejects WHERE operation_id = '{op}' ORDER BY rejected_at DESC LIMIT 1"
            );
            let batches = collect(&ctx, &sql).await?;
            if let Some(r) = RejectRow::from_batches(&batches).map_err(|e| e.to_string())?.into_iter().next() {
                return Ok(json!({
                    "operation_id": op,
                    "status": "refused",
                    "error_code": r.code.as_str(),
                    "error_message": r.message,
                }));
            }
        }
        if self.queued(op).await?.is_some() {
            Ok(json!({"operation_id": op, "status": "queued", "detail": "waiting for the scheduled payouts job"}))
        } else {
            Err(format!("no request {op} is known (check the request_id)"))
        }
    }

    async fn open_findings(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let limit = match args.get("limit") {
            None | Some(Value::Null) => 20,
            Some(v) => v.as_u64().filter(|n| (1..=200).contains(n)).ok_or("limit must be an integer 1..=200")?,
        };
        let class = text(args, "class")?;
        if let Some(c) = &class
            && !c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err("class must be a finding class, e.g. amount_mismatch".into());
        }
        if !self.table_exists("purpleflea.payouts.open_findings").await? {
            return Ok(json!({"findings": [], "detail": "reconcile has not run yet: no findings recorded"}));
        }
        let filter = class.map(|c| format!("WHERE class = '{c}'")).unwrap_or_default();
        let rows = self
            .rows(&format!(
                "SELECT class, operation_id, agent_id, detail, first_seen_at, \
                 CAST(expected_amount_usd AS VARCHAR) AS expected_amount_usd, \
                 CAST(actual_amount_usd AS VARCHAR) AS actual_amount_usd \
                 FROM purpleflea.payouts.open_findings {filter} ORDER BY first_seen_at LIMIT {limit}"
            ))
            .await?;
        Ok(json!({"findings": rows}))
    }

    fn parse_request(&self, tool: &str, args: &Map<String, Value>) -> Result<Request, String> {
        let create_action = |args: &Map<String, Value>| -> Result<(Option<String>, Option<String>), String> {
            let escrow = text(args, "escrow_id")?;
            let create = text(args, "create_request_id")?;
            match (&escrow, &create) {
                (Some(e), None) => {
                    crate::payouts::validate::check_id(e).map_err(|m| format!("escrow_id {m}"))?;
                    Ok((escrow, None))
                }
                (None, Some(c)) => {
                    policy::check_request_id(c).map_err(|m| format!("create_request_id: {m}"))?;
                    Ok((None, Some(policy::operation_id(&self.client, c))))
                }
                _ => Err("give exactly one of escrow_id and create_request_id".into()),
            }
        };
        Ok(match tool {
            "request_payout" => Request::Payout {
                agent_id: id_arg(args, "agent_id")?,
                amount: amount_arg(args)?,
                reason: free_text(args, "reason", true)?.unwrap_or_default(),
            },
            "create_escrow" => {
                let metadata = match args.get("timeout_hours") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        let h = v.as_u64().filter(|h| (1..=720).contains(h)).ok_or("timeout_hours must be 1..=720")?;
                        Some(json!({"timeout_hours": h}).to_string())
                    }
                };
                let buyer = id_arg(args, "buyer_agent_id")?;
                let seller = id_arg(args, "counterparty_agent_id")?;
                if buyer == seller {
                    return Err("buyer_agent_id and counterparty_agent_id must differ".into());
                }
                Request::Create {
                    buyer,
                    seller,
                    amount: amount_arg(args)?,
                    description: free_text(args, "description", true)?.unwrap_or_default(),
                    metadata,
                }
            }
            "release_escrow" => {
                let (escrow_id, create_action_id) = create_action(args)?;
                let reason = free_text(args, "reason", false)?
                    .unwrap_or_else(|| format!("released through pfsync mcp by {}", self.requested_by()));
                Request::Release { escrow_id, create_action_id, reason: Some(reason) }
            }
            _ => {
                let (escrow_id, create_action_id) = create_action(args)?;
                Request::Dispute {
                    escrow_id,
                    create_action_id,
                    reason: free_text(args, "reason", true)?.unwrap_or_default(),
                }
            }
        })
    }

    async fn money(&self, tool: &str, args: &Map<String, Value>) -> Outcome {
        let request_id = match required(args, "request_id").and_then(|r| policy::check_request_id(&r).map(|()| r)) {
            Ok(r) => r,
            Err(e) => return Outcome::invalid(e),
        };
        let op = policy::operation_id(&self.client, &request_id);
        let mut out = Outcome::for_request(request_id, op.clone());
        let req = match self.parse_request(tool, args) {
            Ok(r) => r,
            Err(e) => {
                out.result = Err(e);
                return out;
            }
        };
        out.amount = req.amount();
        let _one_at_a_time = self.money.lock().await;
        let decision = self.policy.decision(tool);
        // A retry: the same operation, answered from what the first call did (run again only to finish it).
        match self.queued(&op).await {
            Err(e) => {
                out.decision = "error";
                out.result = Err(e);
                return out;
            }
            Ok(Some(first)) => {
                out.decision = "replayed";
                if first != req {
                    out.result = Err(used_for_another(out.request_id.as_deref().unwrap_or_default()));
                    return out;
                }
                if decision == Decision::Execute {
                    out.result = self.execute(&op, &req).await;
                } else {
                    out.result = self.status_of(&op).await;
                }
                return out;
            }
            Ok(None) => {}
        }
        match self.direct_calls(&op).await {
            Err(e) => {
                out.decision = "error";
                out.result = Err(e);
                return out;
            }
            Ok(rows) if !rows.is_empty() => {
                out.decision = "replayed";
                out.result = Err(used_for_another(out.request_id.as_deref().unwrap_or_default()));
                return out;
            }
            Ok(_) => {}
        }
        out.decision = "refused";
        if decision == Decision::Deny {
            out.decision = "deny";
            out.result = Err(format!("{tool} is not allowed on this server (policy: deny). Nothing was moved."));
            return out;
        }
        let agents: Vec<&str> = match &req {
            Request::Payout { agent_id, .. } => vec![agent_id],
            Request::Create { buyer, seller, .. } => vec![buyer, seller],
            Request::Release { escrow_id, create_action_id, .. }
            | Request::Dispute { escrow_id, create_action_id, .. } => {
                match self.escrow_parties(escrow_id.as_deref(), create_action_id.as_deref()).await {
                    Ok(p) => {
                        if let Err(e) =
                            self.policy.admit(&self.client, &p.iter().map(String::as_str).collect::<Vec<_>>(), None)
                        {
                            out.result = Err(format!("{e}. Nothing was moved."));
                            return out;
                        }
                        vec![]
                    }
                    Err(e) => {
                        out.result = Err(e);
                        return out;
                    }
                }
            }
        };
        if let Err(e) = self.policy.admit(&self.client, &agents, req.amount()) {
            out.result = Err(format!("{e}. Nothing was moved."));
            return out;
        }
        if req.amount().is_some() && self.policy.max_per_day().is_some() {
            let spent = match self.spent_today().await {
                Ok(s) => s,
                Err(e) => {
                    out.decision = "error";
                    out.result = Err(e);
                    return out;
                }
            };
            if let Err(e) = self.policy.admit_daily(&self.client, spent, req.amount()) {
                out.result = Err(e);
                return out;
            }
        }
        if let Err(e) = self.append(&op, &req).await {
            out.decision = "error";
            out.result = Err(e);
            return out;
        }
        out.decision = decision.as_str();
        out.result = match decision {
            Decision::Execute => self.execute(&op, &req).await,
            _ => Ok(json!({
                "operation_id": op,
                "status": "queued",
                "queued_in": req.table(),
                "detail": "the scheduled payouts job runs it exactly once; payout_status shows its progress"
            })),
        };
        out
    }

    /// Who an escrow's release or dispute concerns: from the synced escrows table, else from the log of
    /// its create (an escrow created through this server before the next sync). Only with an allowlist.
    async fn escrow_parties(&self, escrow_id: Option<&str>, create: Option<&str>) -> Result<Vec<String>, String> {
        if self.policy.allowed_agents.is_none() {
            return Ok(vec![]);
        }
        let mut queries = Vec::new();
        if let Some(e) = escrow_id {
            if self.table_exists("purpleflea.agents.escrows").await? {
                queries.push(format!(
                    "SELECT buyer_agent_id AS a, seller_agent_id AS b FROM purpleflea.agents.escrows WHERE escrow_id = '{e}'"
                ));
            }
            // The log of its create: an escrow created through this server before the next sync.
            let sql = format!(
                "SELECT * FROM purpleflea.payouts.log WHERE kind = 'escrow_create' AND escrow_id = '{e}' LIMIT 1"
            );
            queries.push(sql);
        }
        if let Some(c) = create {
            queries.push(format!(
                "SELECT buyer_agent_id AS a, seller_agent_id AS b FROM purpleflea.escrow.actions WHERE action_id = '{c}'"
            ));
        }
        for q in queries {
            if q.contains(PAYOUT_LOG.name) {
                let Ok(ctx) = self.ctx_for(&q).await else { continue };
                if ctx.table_exist(PAYOUT_LOG.name).unwrap_or(false)
                    && let Ok(rows) = log_rows(&ctx, &q).await
                    && let Some(r) = rows.into_iter().next()
                {
                    return Ok(r.agent_id.into_iter().chain(r.counterparty_agent_id).collect());
                }
            } else if let Ok(rows) = self.rows(&q).await
                && let Some(r) = rows.into_iter().next()
            {
                return Ok(["a", "b"].iter().filter_map(|k| r.get(*k)?.as_str().map(str::to_string)).collect());
            }
        }
        Err("the escrow's buyer and seller are not known here (not synced yet), so the agent allowlist cannot be \
             checked. Nothing was moved; try again after the next sync"
            .into())
    }

    /// The request already written under this operation id, if any, its values decoded with their types.
    async fn queued(&self, op: &str) -> Result<Option<Request>, String> {
        let sql = format!("SELECT * FROM purpleflea.payouts.pending WHERE payout_id = '{op}'");
        let batches = collect(&self.ctx_for(&sql).await?, &sql).await?;
        if let Some(r) = PendingPayoutRow::from_batches(&batches).map_err(|e| e.to_string())?.into_iter().next() {
            let amount = r.amount_usd.ok_or_else(|| format!("the queued payout {op} has no amount"))?;
            return Ok(Some(Request::Payout {
                agent_id: r.agent_id.unwrap_or_default(),
                amount,
                reason: r.reason.unwrap_or_default(),
            }));
        }
        let sql = format!("SELECT * FROM purpleflea.escrow.actions WHERE action_id = '{op}'");
        let batches = collect(&self.ctx_for(&sql).await?, &sql).await?;
        let Some(r) = EscrowActionRow::from_batches(&batches).map_err(|e| e.to_string())?.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(match r.action.as_deref() {
            Some("create") => Request::Create {
                buyer: r.buyer_agent_id.unwrap_or_default(),
                seller: r.seller_agent_id.unwrap_or_default(),
                amount: r.amount_usd.ok_or_else(|| format!("the queued escrow create {op} has no amount"))?,
                description: r.description.unwrap_or_default(),
                metadata: r.metadata,
            },
            Some("release") => {
                Request::Release { escrow_id: r.escrow_id, create_action_id: r.create_action_id, reason: r.reason }
            }
            _ => Request::Dispute {
                escrow_id: r.escrow_id,
                create_action_id: r.create_action_id,
                reason: r.reason.unwrap_or_default(),
            },
        }))
    }

    /// What this client requested today (UTC), queued or executed: payouts and escrow funding.
    async fn spent_today(&self) -> Result<Usd, String> {
        let since = Utc::now().format("%Y-%m-%dT00:00:00Z");
        let by = self.requested_by();
        // One query per table: DataFusion refuses a UNION of columns whose comments differ.
        let mut total = Usd::ZERO;
        for (table, filter) in [(PENDING_PAYOUTS.name, ""), (ESCROW_ACTIONS.name, "AND action = 'create'")] {
            let rows = self
                .rows(&format!(
                    "SELECT CAST(coalesce(sum(amount_usd), 0) AS VARCHAR) AS total FROM {table} \
                     WHERE requested_by = '{by}' AND requested_at >= TIMESTAMP '{since}' {filter}"
                ))
                .await?;
            let t = rows.first().and_then(|r| r.get("total")?.as_str().map(str::to_string)).unwrap_or_default();
            let t = Usd::parse(&t).map_err(|e| format!("today's total {t:?}: {e}"))?;
            total = total.checked_add(t).ok_or("today's total overflows")?;
        }
        Ok(total)
    }

    /// Append the request to the pending or actions table (created, empty, when absent: as `pfsync init`).
    async fn append(&self, op: &str, req: &Request) -> Result<(), String> {
        let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "mcp" };
        let now = Some(Utc::now());
        let by = Some(self.requested_by());
        let action = |action: &str, escrow_id: &Option<String>, create: &Option<String>, reason: Option<String>| {
            EscrowActionRow {
                action_id: op.to_string(),
                action: Some(action.to_string()),
                escrow_id: escrow_id.clone(),
                create_action_id: create.clone(),
                buyer_agent_id: None,
                seller_agent_id: None,
                amount_usd: None,
                description: None,
                metadata: None,
                reason,
                requested_at: now,
                requested_by: by.clone(),
            }
        };
        let (spec, batch) = match req {
            Request::Payout { agent_id, amount, reason } => (
                &PENDING_PAYOUTS,
                PendingPayoutRow::to_batch(&[PendingPayoutRow {
                    payout_id: op.to_string(),
                    agent_id: Some(agent_id.clone()),
                    amount_usd: Some(*amount),
                    reason: Some(reason.clone()),
                    requested_at: now,
                    requested_by: by.clone(),
                }]),
            ),
            Request::Create { buyer, seller, amount, description, metadata } => {
                let reason = format!("escrow created through pfsync mcp by {}", self.requested_by());
                let row = EscrowActionRow {
                    buyer_agent_id: Some(buyer.clone()),
                    seller_agent_id: Some(seller.clone()),
                    amount_usd: Some(*amount),
                    description: Some(description.clone()),
                    metadata: metadata.clone(),
                    ..action("create", &None, &None, Some(reason))
                };
                (&ESCROW_ACTIONS, EscrowActionRow::to_batch(&[row]))
            }
            Request::Release { escrow_id, create_action_id, reason } => (
                &ESCROW_ACTIONS,
                EscrowActionRow::to_batch(&[action("release", escrow_id, create_action_id, reason.clone())]),
            ),
            Request::Dispute { escrow_id, create_action_id, reason } => (
                &ESCROW_ACTIONS,
                EscrowActionRow::to_batch(&[action("dispute", escrow_id, create_action_id, Some(reason.clone()))]),
            ),
        };
        let batch = batch.map_err(|e| e.to_string())?;
        let table = open_or_create(&self.wh, spec, &commit).await.map_err(|e| e.to_string())?;
        table
            .write(vec![batch])
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| format!("writing {} failed: {e}", spec.name))?;
        Ok(())
    }

    /// Run the engine for this one operation now, and answer its status. The engine's log makes it
    /// exactly once: an operation already final is not sent again.
    async fn execute(&self, op: &str, req: &Request) -> Result<Value, String> {
        // A release or dispute naming its create by id needs the create in the same read (a create already
        // final is not sent again: the log says so).
        let create = match req {
            Request::Release { create_action_id: Some(c), .. } | Request::Dispute { create_action_id: Some(c), .. } => {
                format!(" OR action_id = '{c}'")
            }
            _ => String::new(),
        };
        if let Request::Release { create_action_id: Some(c), .. } | Request::Dispute { create_action_id: Some(c), .. } =
            req
        {
            // Only a create that already completed: a queued one is the scheduled job's to run, not this call's.
            let status = self.status_of(c).await.ok();
            let state = status.as_ref().and_then(|s| s.get("status")?.as_str()).unwrap_or("unknown to this server");
            if state != "completed" {
                return Err(format!(
                    "the escrow's create ({c}) has not completed (status: {state}), so there is nothing to release or \
                     dispute yet. Nothing was moved; call again with the same request_id once it has"
                ));
            }
        }
        let opts = PayoutOptions {
            payout_sql: Some(format!("SELECT * FROM purpleflea.payouts.pending WHERE payout_id = '{op}'")),
            action_sql: Some(format!("SELECT * FROM purpleflea.escrow.actions WHERE action_id = '{op}'{create}")),
            ..self.opts.clone()
        };
        let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "payouts" };
        let progress = Progress::new(false, "mcp");
        // The entry point `pfsync payouts` runs: the same checks, refusals and ledger copies.
        let report: Result<PayoutReport, _> =
            run_payouts(self.provider.as_ref(), &self.wh, &commit, &opts, &progress).await;
        if let Err(e) = report {
            return Err(format!("the payouts engine failed: {e}. Call again with the same request_id to retry safely"));
        }
        let status = self.status_of(op).await?;
        match status.get("status").and_then(|s| s.as_str()) {
            Some("rejected") | Some("refused") => Err(format!(
                "refused: {} ({}). Nothing was moved",
                status.get("error_message").and_then(|m| m.as_str()).unwrap_or("no message"),
                status.get("error_code").and_then(|m| m.as_str()).unwrap_or("no code")
            )),
            _ => Ok(status),
        }
    }
}

fn used_for_another(request_id: &str) -> String {
    format!("request_id {request_id} was already used for a different request; use a new request_id")
}

impl Engine {
    fn parse_direct(&self, tool: &str, args: &Map<String, Value>) -> Result<DirectRequest, String> {
        match tool {
            "claim_faucet" => {
                let named = |k: &str| -> Result<Option<String>, String> {
                    match text(args, k)? {
                        Some(v) => {
                            crate::payouts::validate::check_id(&v).map_err(|e| format!("{k} {e}"))?;
                            Ok(Some(v))
                        }
                        None => Ok(None),
                    }
                };
                match (named("agent_id")?, named("agent_casino_id")?) {
                    (Some(a), None) | (None, Some(a)) => Ok(DirectRequest::Faucet { agent_id: a }),
                    (Some(a), Some(b)) if a == b => Ok(DirectRequest::Faucet { agent_id: a }),
                    _ => Err("give the agent as agent_id (or agent_casino_id), once".into()),
                }
            }
            _ => {
                let escrow = text(args, "escrow_id")?;
                let create = text(args, "create_request_id")?;
                match (escrow, create) {
                    (Some(e), None) => {
                        crate::payouts::validate::check_id(&e).map_err(|m| format!("escrow_id {m}"))?;
                        Ok(DirectRequest::Complete { escrow_id: Some(e), create_action_id: None })
                    }
                    (None, Some(c)) => {
                        policy::check_request_id(&c).map_err(|m| format!("create_request_id: {m}"))?;
                        Ok(DirectRequest::Complete {
                            escrow_id: None,
                            create_action_id: Some(policy::operation_id(&self.client, &c)),
                        })
                    }
                    _ => Err("give exactly one of escrow_id and create_request_id".into()),
                }
            }
        }
    }

    /// Calls of a direct tool made under this operation id that acted (decision `execute`), oldest first:
    /// `(tool, is_error, arguments, result)`.
    async fn direct_calls(&self, op: &str) -> Result<Vec<(String, bool, String, String)>, String> {
        let sql = format!(
            "SELECT * FROM purpleflea.ops.mcp_calls \
             WHERE operation_id = '{op}' AND decision = 'execute' AND tool IN ('claim_faucet', 'mark_complete') \
             ORDER BY started_at"
        );
        let ctx = self.ctx_for(&sql).await?;
        if !ctx.table_exist(MCP_CALLS.name).unwrap_or(false) {
            return Ok(Vec::new());
        }
        let calls = CallRecord::from_batches(&collect(&ctx, &sql).await?).map_err(|e| e.to_string())?;
        Ok(calls.into_iter().map(|c| (c.tool, c.is_error, c.arguments, c.result.unwrap_or_default())).collect())
    }

    /// What earlier calls with this operation id did: the id names a queued payout or escrow action, or
    /// another direct request (refused); a call that succeeded (its result is the answer); or nothing yet.
    async fn prior(&self, op: &str, tool: &str, req: &DirectRequest) -> Result<Prior, String> {
        if self.queued(op).await?.is_some() {
            return Ok(Prior::OtherRequest);
        }
        for (t, is_error, arguments, result) in self.direct_calls(op).await? {
            let same = t == tool
                && serde_json::from_str::<Map<String, Value>>(&arguments)
                    .ok()
                    .and_then(|a| self.parse_direct(tool, &a).ok())
                    .is_some_and(|r| r == *req);
            if !same {
                return Ok(Prior::OtherRequest);
            }
            if !is_error {
                let first = serde_json::from_str::<Value>(&result)
                    .map_err(|e| format!("the first result of {op} cannot be read back ({e})"))?;
                return Ok(Prior::Done(first));
            }
        }
        Ok(Prior::Nothing)
    }

    /// `claim_faucet` and `mark_complete`: replay, policy, allowlist, then the provider, once.
    async fn direct(&self, tool: &str, args: &Map<String, Value>) -> Outcome {
        let request_id = match required(args, "request_id").and_then(|r| policy::check_request_id(&r).map(|()| r)) {
            Ok(r) => r,
            Err(e) => return Outcome::invalid(e),
        };
        let op = policy::operation_id(&self.client, &request_id);
        let mut out = Outcome::for_request(request_id.clone(), op.clone());
        let req = match self.parse_direct(tool, args) {
            Ok(r) => r,
            Err(e) => {
                out.result = Err(e);
                return out;
            }
        };
        let _one_at_a_time = self.money.lock().await;
        match self.prior(&op, tool, &req).await {
            Err(e) => {
                out.decision = "error";
                out.result = Err(e);
                return out;
            }
            Ok(Prior::OtherRequest) => {
                out.decision = "replayed";
                out.result = Err(used_for_another(&request_id));
                return out;
            }
            Ok(Prior::Done(mut first)) => {
                out.decision = "replayed";
                out.amount = first.get("amount_usd").and_then(Value::as_str).and_then(|a| Usd::parse(a).ok());
                if let Value::Object(m) = &mut first {
                    m.insert("replayed".into(), json!(true));
                }
                out.result = Ok(first);
                return out;
            }
            Ok(Prior::Nothing) => {}
        }
        out.decision = "refused";
        match self.policy.decision(tool) {
            Decision::Execute => {}
            other => {
                out.decision = "deny";
                out.result = Err(format!(
                    "{tool} is not allowed on this server (policy: {}). Nothing was changed.",
                    if other == Decision::Queue { "queue, which nothing runs for this tool" } else { "deny" }
                ));
                return out;
            }
        }
        let agents = match &req {
            DirectRequest::Faucet { agent_id } => Ok(vec![agent_id.clone()]),
            DirectRequest::Complete { escrow_id, create_action_id } => {
                self.escrow_parties(escrow_id.as_deref(), create_action_id.as_deref()).await
            }
        };
        let admitted = agents
            .and_then(|a| self.policy.admit(&self.client, &a.iter().map(String::as_str).collect::<Vec<_>>(), None));
        if let Err(e) = admitted {
            out.result = Err(format!("{e}. Nothing was changed."));
            return out;
        }
        out.decision = "execute";
        out.result = self.act(self.provider.as_ref(), &op, &req).await;
        if let Ok(v) = &out.result {
            out.amount = v.get("amount_usd").and_then(Value::as_str).and_then(|a| Usd::parse(a).ok());
        }
        out
    }

    /// Carry out a direct request at the provider, as far as it declares it can.
    async fn act(&self, provider: &dyn Provider, op: &str, req: &DirectRequest) -> Result<Value, String> {
        let caps = provider.capabilities();
        match req {
            DirectRequest::Faucet { agent_id } => {
                if !caps.faucet_once_per_agent {
                    return Err("this provider declares no faucet that credits an agent at most once, so a claim \
                                could not be made exactly once. Nothing was claimed"
                        .into());
                }
                let key = IdempotencyKey::derive(&self.opts.namespace, "faucet", op)
                    .map_err(|e| format!("the claim's idempotency key: {e}"))?;
                match provider.claim_faucet(agent_id, &key).await {
                    Ok(FaucetAnswer::Credited(c)) => Ok(json!({
                        "operation_id": op,
                        "status": "credited",
                        "agent_id": c.agent_id,
                        "amount_usd": c.amount.to_string(),
                        "claim_id": c.claim_id,
                        "detail": if c.replayed {
                            "credited by an earlier attempt of this request (the provider's record); nothing more now"
                        } else {
                            "credited now; the provider credits an agent once"
                        },
                    })),
                    Ok(FaucetAnswer::AlreadyClaimed { message }) => Err(format!(
                        "agent {agent_id} has already claimed the faucet (the provider credits each agent once; at \
                         Purple Flea registration claims it): {message}. Nothing was credited by this call"
                    )),
                    Err(e) => Err(format!(
                        "the faucet claim for {agent_id} did not complete: {e}. Calling again with the same \
                         request_id is safe: the provider credits an agent at most once"
                    )),
                }
            }
            DirectRequest::Complete { escrow_id, create_action_id } => {
                if !caps.escrow_completion {
                    return Err("this provider (the seed's API) has no complete step: its escrows go from funded \
                                straight to released (release_escrow) or refunded (dispute_escrow), and the seller \
                                need not mark anything. Nothing was changed"
                        .into());
                }
                let id = match (escrow_id, create_action_id) {
                    (Some(e), _) => e.clone(),
                    (None, Some(c)) => {
                        let status = self.status_of(c).await.ok();
                        let field = |k: &str| status.as_ref().and_then(|s| s.get(k)?.as_str()).map(str::to_string);
                        match (field("status").as_deref(), field("escrow_id")) {
                            (Some("completed"), Some(e)) => e,
                            (state, _) => {
                                return Err(format!(
                                    "the escrow's create ({c}) has not completed (status: {}), so there is no escrow \
                                     to mark complete yet. Nothing was changed; call again with the same request_id \
                                     once it has",
                                    state.unwrap_or("unknown to this server")
                                ));
                            }
                        }
                    }
                    (None, None) => return Err("give exactly one of escrow_id and create_request_id".into()),
                };
                match provider.mark_complete(&id).await {
                    Ok(c) => Ok(json!({
                        "operation_id": op,
                        "escrow_id": c.escrow_id,
                        "status": c.status,
                        "counterparty_agent_id": c.counterparty_id,
                        "completed_at": c.completed_at,
                        "detail": if c.already {
                            "it was marked complete before this call; nothing more was done"
                        } else {
                            "marked complete by its counterparty; the buyer can now release_escrow"
                        },
                    })),
                    Err(e) => Err(format!(
                        "escrow {id} was not marked complete: {e}. Calling again with the same request_id is safe \
                         (the escrow's state machine completes it at most once)"
                    )),
                }
            }
        }
    }
}

async fn collect(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    ctx.sql(sql)
        .await
        .map_err(|e| format!("query failed: {e}"))?
        .collect()
        .await
        .map_err(|e| format!("query failed: {e}"))
}

/// The payout log's rows a query over `purpleflea.payouts.log` returns, decoded with their types.
async fn log_rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<Vec<LogEvent>, String> {
    LogEvent::from_batches(&collect(ctx, sql).await?).map_err(|e| e.to_string())
}

/// What `payout_status` answers for a logged operation: the status view's columns, amounts exact, absent
/// values left out.
fn status_json(s: &Summary) -> Result<Value, String> {
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
    let at = arrow::util::display::array_value_to_string(&at, 0).map_err(|e| e.to_string())?;
    put("last_recorded_at", Some(json!(at)));
    Ok(Value::Object(m))
}

async fn rows_in(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<Vec<Map<String, Value>>, String> {
    to_json(&collect(ctx, sql).await?)
}

fn to_json(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, String> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(Vec::new());
    }
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    serde_json::from_slice(&w.into_inner()).map_err(|e| e.to_string())
}
