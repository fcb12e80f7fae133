//! What a governed tool's call asks for, validated: a money request (an operation of the engine, written as a
//! row of the pending or actions table and read back from it) or a direct request (the faucet, an escrow's
//! complete step). The same request id with the same request is a retry; with another, a refusal.

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::args::{ArgError, Args};
use super::error::McpError;
use super::policy;
use super::tool::Tool;
use crate::money::Usd;
use crate::payouts::requested::{EscrowActionRow, PendingPayoutRow};
use crate::tables::row::{Row, RowError};
use crate::tables::{ESCROW_ACTIONS, PENDING_PAYOUTS, TableSpec};

/// Which escrow a release, dispute or complete is about: its id, or the operation id of the create that
/// makes it (an escrow created through this server before its id is known). Exactly one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowRef {
    pub escrow_id: Option<String>,
    pub create_action_id: Option<String>,
}

impl EscrowRef {
    /// `escrow_id`, or `create_request_id` (the client's own create) as its operation id.
    fn parse(args: &Args, client: &str) -> Result<EscrowRef, ArgError> {
        match (args.text("escrow_id")?, args.text("create_request_id")?) {
            (Some(e), None) => {
                Args::check_id("escrow_id", &e)?;
                Ok(EscrowRef { escrow_id: Some(e), create_action_id: None })
            }
            (None, Some(c)) => {
                policy::check_request_id(&c).map_err(ArgError::CreateRequestId)?;
                Ok(EscrowRef { escrow_id: None, create_action_id: Some(policy::operation_id(client, &c)) })
            }
            _ => Err(ArgError::ExactlyOne("escrow_id and create_request_id")),
        }
    }
}

/// A request of a money tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Payout { agent_id: String, amount: Usd, reason: String },
    Create { buyer: String, seller: String, amount: Usd, description: String, metadata: Option<String> },
    Release { escrow: EscrowRef, reason: Option<String> },
    Dispute { escrow: EscrowRef, reason: String },
}

/// A request read back from its row, with the amount the row records: a payout's or a create's, and for a
/// release or dispute this server wrote, the escrow's amount it counted toward the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub request: Request,
    pub amount: Option<Usd>,
}

/// A request of a tool that acts on the provider directly.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectRequest {
    Faucet { agent_id: String },
    Complete(EscrowRef),
}

impl Request {
    pub fn parse(tool: Tool, args: &Args, client: &str) -> Result<Request, ArgError> {
        Ok(match tool {
            Tool::RequestPayout => Request::Payout {
                agent_id: args.id("agent_id")?,
                amount: args.amount()?,
                reason: args.free_text("reason", true)?.unwrap_or_default(),
            },
            Tool::CreateEscrow => {
                let metadata =
                    args.number("timeout_hours", 1..=720, "1..=720")?.map(|h| json!({"timeout_hours": h}).to_string());
                let buyer = args.id("buyer_agent_id")?;
                let seller = args.id("counterparty_agent_id")?;
                if buyer == seller {
                    return Err(ArgError::SameParties);
                }
                Request::Create {
                    buyer,
                    seller,
                    amount: args.amount()?,
                    description: args.free_text("description", true)?.unwrap_or_default(),
                    metadata,
                }
            }
            Tool::ReleaseEscrow => {
                let escrow = EscrowRef::parse(args, client)?;
                let reason = args
                    .free_text("reason", false)?
                    .unwrap_or_else(|| format!("released through pfsync mcp by {}", requested_by(client)));
                Request::Release { escrow, reason: Some(reason) }
            }
            // Only money tools come here (`Kind::Money`): the last one is the dispute.
            _ => {
                let escrow = EscrowRef::parse(args, client)?;
                Request::Dispute { escrow, reason: args.free_text("reason", true)?.unwrap_or_default() }
            }
        })
    }

    /// The amount the caller asked for (payouts and escrow creates).
    pub fn amount(&self) -> Option<Usd> {
        match self {
            Request::Payout { amount, .. } | Request::Create { amount, .. } => Some(*amount),
            _ => None,
        }
    }

    /// The escrow a release or dispute is about.
    pub fn escrow(&self) -> Option<&EscrowRef> {
        match self {
            Request::Release { escrow, .. } | Request::Dispute { escrow, .. } => Some(escrow),
            _ => None,
        }
    }

    /// The table the request is queued in.
    pub fn table(&self) -> &'static TableSpec {
        match self {
            Request::Payout { .. } => &PENDING_PAYOUTS,
            _ => &ESCROW_ACTIONS,
        }
    }

    /// The request a queued payout row holds, its values decoded with their types.
    pub fn from_payout_row(r: PendingPayoutRow) -> Result<Queued, McpError> {
        let amount = r.amount_usd.ok_or_else(|| McpError::QueuedWithoutAmount { what: "payout", op: r.payout_id })?;
        let request =
            Request::Payout { agent_id: r.agent_id.unwrap_or_default(), amount, reason: r.reason.unwrap_or_default() };
        Ok(Queued { request, amount: Some(amount) })
    }

    /// The request a queued escrow action row holds.
    pub fn from_action_row(r: EscrowActionRow) -> Result<Queued, McpError> {
        let escrow = EscrowRef { escrow_id: r.escrow_id, create_action_id: r.create_action_id };
        let amount = r.amount_usd;
        let request = match r.action.as_deref() {
            Some("create") => Request::Create {
                buyer: r.buyer_agent_id.unwrap_or_default(),
                seller: r.seller_agent_id.unwrap_or_default(),
                amount: r
                    .amount_usd
                    .ok_or_else(|| McpError::QueuedWithoutAmount { what: "escrow create", op: r.action_id })?,
                description: r.description.unwrap_or_default(),
                metadata: r.metadata,
            },
            Some("release") => Request::Release { escrow, reason: r.reason },
            _ => Request::Dispute { escrow, reason: r.reason.unwrap_or_default() },
        };
        Ok(Queued { request, amount })
    }

    /// The request as the row an upstream job would write, requested by `client` at `now`. A release or
    /// dispute records `counted`, the escrow's amount it counts toward the client's limits (the engine
    /// reads no amount of theirs), so the daily total finds it.
    pub fn to_batch(
        &self,
        op: &str,
        client: &str,
        now: DateTime<Utc>,
        counted: Option<Usd>,
    ) -> Result<RecordBatch, RowError> {
        let (requested_at, by) = (Some(now), Some(requested_by(client)));
        let action = |action: &str, escrow: &EscrowRef, reason: Option<String>| EscrowActionRow {
            action_id: op.to_string(),
            action: Some(action.to_string()),
            escrow_id: escrow.escrow_id.clone(),
            create_action_id: escrow.create_action_id.clone(),
            buyer_agent_id: None,
            seller_agent_id: None,
            amount_usd: counted,
            description: None,
            metadata: None,
            reason,
            requested_at,
            requested_by: by.clone(),
        };
        match self {
            Request::Payout { agent_id, amount, reason } => PendingPayoutRow::to_batch(&[PendingPayoutRow {
                payout_id: op.to_string(),
                agent_id: Some(agent_id.clone()),
                amount_usd: Some(*amount),
                reason: Some(reason.clone()),
                requested_at,
                requested_by: by.clone(),
            }]),
            Request::Create { buyer, seller, amount, description, metadata } => {
                let reason = format!("escrow created through pfsync mcp by {}", requested_by(client));
                let none = EscrowRef { escrow_id: None, create_action_id: None };
                EscrowActionRow::to_batch(&[EscrowActionRow {
                    buyer_agent_id: Some(buyer.clone()),
                    seller_agent_id: Some(seller.clone()),
                    amount_usd: Some(*amount),
                    description: Some(description.clone()),
                    metadata: metadata.clone(),
                    ..action("create", &none, Some(reason))
                }])
            }
            Request::Release { escrow, reason } => {
                EscrowActionRow::to_batch(&[action("release", escrow, reason.clone())])
            }
            Request::Dispute { escrow, reason } => {
                EscrowActionRow::to_batch(&[action("dispute", escrow, Some(reason.clone()))])
            }
        }
    }
}

impl DirectRequest {
    pub fn parse(tool: Tool, args: &Args, client: &str) -> Result<DirectRequest, ArgError> {
        match tool {
            Tool::ClaimFaucet => match (args.optional_id("agent_id")?, args.optional_id("agent_casino_id")?) {
                (Some(a), None) | (None, Some(a)) => Ok(DirectRequest::Faucet { agent_id: a }),
                (Some(a), Some(b)) if a == b => Ok(DirectRequest::Faucet { agent_id: a }),
                _ => Err(ArgError::AgentTwice),
            },
            // Only direct tools come here (`Kind::Direct`): the other one is the complete step.
            _ => EscrowRef::parse(args, client).map(DirectRequest::Complete),
        }
    }
}

/// `requested_by` of the rows a client's calls write: `mcp:<client>`.
pub fn requested_by(client: &str) -> String {
    format!("mcp:{client}")
}
