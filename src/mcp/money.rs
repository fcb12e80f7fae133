//! The money tools (`request_payout`, `create_escrow`, `release_escrow`, `dispute_escrow`): each call is an
//! operation of the exactly-once engine, `mcp:<client>:<request_id>`, so an agent's retry with the same
//! request id is the same operation and answers the first result. The policy decides, and the limits hold,
//! before a row is written; the row goes where an upstream job would write it, and under `execute` the
//! engine runs now through the entry point `pfsync payouts` runs.

use chrono::Utc;
use serde_json::{Value, json};

use super::args::Args;
use super::audit::CallDecision;
use super::dispatch::{Engine, Outcome};
use super::error::{McpError, Nothing};
use super::policy::{Decision, Refusal};
use super::query::collect;
use super::request::{Queued, Request, requested_by};
use super::tool::Tool;
use crate::money::Usd;
use crate::payouts::requested::{EscrowActionRow, PendingPayoutRow};
use crate::payouts::{PayoutOptions, run_payouts};
use crate::progress::Progress;
use crate::tables::row::Row;
use crate::tables::{CommitInfo, ESCROW_ACTIONS, PENDING_PAYOUTS, open_or_create};

impl Engine {
    /// A money call, its request id known: replay, policy, whose escrow, allowlists, limits, the row, then
    /// the engine. `out.decision` says how far it got.
    pub(super) async fn money(&self, tool: Tool, args: &Args<'_>, out: &mut Outcome) -> Result<Value, McpError> {
        let (request_id, op) = out.ids();
        let (request_id, op) = (request_id.to_string(), op.to_string());
        let req = Request::parse(tool, args, &self.client)?;
        out.amount = req.amount();
        let _one_at_a_time = self.money.lock().await;
        let decision = self.policy.decision_with(tool, self.provider.capabilities().dispute_resolvable);
        // A retry: the same operation, answered from what the first call did (run again only to finish it).
        out.decision = CallDecision::Error;
        if let Some(first) = self.queued(&op).await? {
            out.decision = CallDecision::Replayed;
            if first.request != req {
                return Err(McpError::UsedForAnother(request_id));
            }
            out.amount = first.amount;
            return match decision {
                Decision::Execute => self.execute(&op, &req).await,
                _ => self.status_of(&op).await?.to_json(),
            };
        }
        if !self.direct_calls(&op).await?.is_empty() {
            out.decision = CallDecision::Replayed;
            return Err(McpError::UsedForAnother(request_id));
        }
        // A release or dispute: whose escrow, and how much it moves (what it counts toward the limits).
        let facts = match req.escrow() {
            Some(escrow) => Some(self.escrow_facts(escrow).await?),
            None => None,
        };
        let amount = req.amount().or(facts.as_ref().and_then(|f| f.amount));
        out.amount = amount;
        out.decision = CallDecision::Refused;
        if decision == Decision::Deny {
            out.decision = CallDecision::Deny;
            return Err(match self.policy.decision(tool) {
                Decision::Deny => McpError::Denied { tool },
                _ => McpError::UnresolvableDispute,
            });
        }
        let refuse = |refusal| McpError::NotAdmitted { refusal, nothing: Nothing::Moved };
        let agents = match &req {
            Request::Payout { agent_id, .. } => vec![agent_id.clone()],
            Request::Create { buyer, seller, .. } => vec![buyer.clone(), seller.clone()],
            Request::Release { escrow, .. } | Request::Dispute { escrow, .. } => {
                let facts = facts.unwrap_or_default();
                let parties = self.escrow_admission(escrow, &facts, Nothing::Moved)?;
                if amount.is_none() && self.policy.limits_amounts() {
                    let escrow = escrow.escrow_id.clone().or(facts.created_by).unwrap_or_default();
                    return Err(refuse(Refusal::AmountUnknown { escrow }));
                }
                parties
            }
        };
        let agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        self.policy.admit(&self.client, &agents, amount).map_err(refuse)?;
        if amount.is_some() && self.policy.max_per_day().is_some() {
            out.decision = CallDecision::Error;
            let spent = self.spent_today().await?;
            out.decision = CallDecision::Refused;
            self.policy.admit_daily(&self.client, spent, amount)?;
        }
        out.decision = CallDecision::Error;
        self.append(&op, &req, amount).await?;
        out.decision = decision.into();
        match decision {
            Decision::Execute => self.execute(&op, &req).await,
            _ => Ok(json!({
                "operation_id": op,
                "status": "queued",
                "queued_in": req.table().name,
                "detail": "the scheduled payouts job runs it exactly once; payout_status shows its progress"
            })),
        }
    }

    /// The request already written under this operation id, if any, its values decoded with their types.
    pub(super) async fn queued(&self, op: &str) -> Result<Option<Queued>, McpError> {
        let sql = format!("SELECT * FROM purpleflea.payouts.pending WHERE payout_id = '{op}'");
        let batches = collect(&self.ctx_for(&sql).await?, &sql).await?;
        if let Some(r) = PendingPayoutRow::from_batches(&batches)?.into_iter().next() {
            return Request::from_payout_row(r).map(Some);
        }
        let sql = format!("SELECT * FROM purpleflea.escrow.actions WHERE action_id = '{op}'");
        let batches = collect(&self.ctx_for(&sql).await?, &sql).await?;
        EscrowActionRow::from_batches(&batches)?.into_iter().next().map(Request::from_action_row).transpose()
    }

    /// What this client requested today (UTC), queued or executed: payouts, escrow funding, and the escrows
    /// its releases and disputes moved (at the amount each counted).
    async fn spent_today(&self) -> Result<Usd, McpError> {
        let since = Utc::now().format("%Y-%m-%dT00:00:00Z");
        let by = requested_by(&self.client);
        // One query per table: DataFusion refuses a UNION of columns whose comments differ.
        let mut total = Usd::ZERO;
        for (table, filter) in
            [(PENDING_PAYOUTS.name, ""), (ESCROW_ACTIONS.name, "AND action IN ('create', 'release', 'dispute')")]
        {
            let rows = self
                .rows(&format!(
                    "SELECT CAST(coalesce(sum(amount_usd), 0) AS VARCHAR) AS total FROM {table} \
                     WHERE requested_by = '{by}' AND requested_at >= TIMESTAMP '{since}' {filter}"
                ))
                .await?;
            let text = rows.first().and_then(|r| r.get("total")?.as_str().map(str::to_string)).unwrap_or_default();
            let t = Usd::parse(&text).map_err(|source| McpError::TodaysTotal { text, source })?;
            total = total.checked_add(t).ok_or(McpError::TodaysTotalOverflows)?;
        }
        Ok(total)
    }

    /// Append the request to the pending or actions table (created, empty, when absent: as `pfsync init`).
    async fn append(&self, op: &str, req: &Request, counted: Option<Usd>) -> Result<(), McpError> {
        let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "mcp" };
        let batch = req.to_batch(op, &self.client, Utc::now(), counted)?;
        let spec = req.table();
        let table = open_or_create(&self.wh, spec, &commit).await.map_err(McpError::Table)?;
        table
            .write(vec![batch])
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| McpError::Write { table: spec.name, source: Box::new(e) })?;
        Ok(())
    }

    /// Run the engine for this one operation now, and answer its status. The engine's log makes it
    /// exactly once: an operation already final is not sent again.
    async fn execute(&self, op: &str, req: &Request) -> Result<Value, McpError> {
        // A release or dispute naming its create by id needs the create in the same read (a create already
        // final is not sent again: the log says so).
        let create = req.escrow().and_then(|e| e.create_action_id.as_deref());
        if let Some(c) = create
            && let Err(state) = self.completed_create(c).await
        {
            return Err(McpError::NothingToReleaseYet { create: c.to_string(), state });
        }
        let also = create.map(|c| format!(" OR action_id = '{c}'")).unwrap_or_default();
        let opts = PayoutOptions {
            payout_sql: Some(format!("SELECT * FROM purpleflea.payouts.pending WHERE payout_id = '{op}'")),
            action_sql: Some(format!("SELECT * FROM purpleflea.escrow.actions WHERE action_id = '{op}'{also}")),
            ..self.opts.clone()
        };
        let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "payouts" };
        let progress = Progress::new(false, "mcp");
        // The entry point `pfsync payouts` runs: the same checks, refusals and ledger copies.
        run_payouts(self.provider.as_ref(), &self.wh, &commit, &opts, &progress)
            .await
            .map_err(|e| McpError::Engine(Box::new(e)))?;
        let status = self.status_of(op).await?;
        match status.refusal() {
            Some(refused) => Err(refused),
            None => status.to_json(),
        }
    }
}
