//! Why a tool call did not answer: the text of each is what the agent reads (and what the audit keeps), so
//! it says what happened, whether anything moved, and what to do next.

use super::args::ArgError;
use super::policy::{OverDailyLimit, Refusal};
use super::tool::Tool;
use crate::money::MoneyError;
use crate::payouts::PayoutError;
use crate::provider::ProviderError;
use crate::tables::TableError;
use crate::tables::row::RowError;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error(transparent)]
    Arg(#[from] ArgError),
    #[error("no tool {name:?}; the tools are {}", Tool::ALL.map(Tool::name).join(", "))]
    NoSuchTool { name: String },

    // What the tables or the provider answered to a read.
    #[error("the provider answered: {0}")]
    ProviderAnswered(ProviderError),
    #[error(
        "pfsync holds no key of agent {agent}, and the provider tells a balance only to the agent's own key (held: \
         the payer and [[provider.agent_keys]]). check_balance without live answers from the last sync"
    )]
    NoKeyHeld { agent: String },
    #[error("purpleflea.agents.wallets has no rows yet: the wallets have not been synced (pfsync sync)")]
    WalletsNotSynced,
    #[error("purpleflea.agents.escrows has no rows yet: escrows have not been synced (pfsync sync)")]
    EscrowsNotSynced,
    #[error("agent {0} is not in purpleflea.agents.wallets (check the id, or sync again)")]
    NoSuchWallet(String),
    #[error(
        "escrow {0} is not in purpleflea.agents.escrows yet (a new escrow shows after the next sync; payout_status \
         with the create's request_id shows it now)"
    )]
    NoSuchEscrow(String),
    #[error("no request {0} is known (check the request_id)")]
    NoSuchRequest(String),
    #[error(
        "operation {operation} is not a request of client {client:?}: this server answers a client about its own \
         operations ([mcp] read_all_operations = true answers about every one)"
    )]
    NotYours { operation: String, client: String },

    // The tables themselves.
    #[error("reading the tables failed: {0}")]
    OpenTables(TableError),
    #[error("query failed: {0}")]
    Query(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Rows(#[from] RowError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Table(TableError),
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("the queued {what} {op} has no amount")]
    QueuedWithoutAmount { what: &'static str, op: String },
    #[error("today's total {text:?}: {source}")]
    TodaysTotal { text: String, source: MoneyError },
    #[error("today's total overflows")]
    TodaysTotalOverflows,

    // The request ids, the policy and the limits: refusals before anything is written.
    #[error("request_id {0} was already used for a different request; use a new request_id")]
    UsedForAnother(String),
    #[error("{tool} is not allowed on this server (policy: deny). Nothing was moved.")]
    Denied { tool: Tool },
    #[error(
        "dispute_escrow is not allowed on this server: this provider's disputes freeze the escrow for review with \
         no endpoint to resolve them, and [mcp] unresolvable_disputes is \"deny\" (the default). Nothing was moved."
    )]
    UnresolvableDispute,
    #[error(
        "{tool} is not allowed on this server (policy: {}). Nothing was changed.",
        if *queued { "queue, which nothing runs for this tool" } else { "deny" }
    )]
    DirectDenied { tool: Tool, queued: bool },
    #[error("{refusal}. {nothing}")]
    NotAdmitted { refusal: Refusal, nothing: Nothing },
    #[error(transparent)]
    OverDailyLimit(#[from] OverDailyLimit),
    /// A direct tool's failure to check its escrow (the escrow's parties not known, a table unreadable).
    #[error("{0}. Nothing was changed.")]
    NothingChanged(Box<McpError>),
    #[error(
        "the escrow's buyer and seller are not known here (not synced yet), so the agent allowlist cannot be \
         checked. Nothing was moved; try again after the next sync"
    )]
    PartiesUnknown,

    // The engine's run of a money request.
    #[error(
        "the escrow's create ({create}) has not completed (status: {state}), so there is nothing to release or \
         dispute yet. Nothing was moved; call again with the same request_id once it has"
    )]
    NothingToReleaseYet { create: String, state: String },
    #[error("the payouts engine failed: {0}. Call again with the same request_id to retry safely")]
    Engine(Box<PayoutError>),
    #[error("refused: {message} ({code}). Nothing was moved")]
    Refused { message: String, code: String },

    // The direct tools.
    #[error("the first result of {op} cannot be read back ({source})")]
    FirstResult { op: String, source: serde_json::Error },
    #[error(
        "this provider declares no faucet that credits an agent at most once, so a claim could not be made exactly \
         once. Nothing was claimed"
    )]
    NoOnceFaucet,
    #[error("the claim's idempotency key: {0}")]
    ClaimKey(String),
    #[error(
        "agent {agent} has already claimed the faucet (the provider credits each agent once; at Purple Flea \
         registration claims it): {message}. Nothing was credited by this call"
    )]
    AlreadyClaimed { agent: String, message: String },
    #[error(
        "the faucet claim for {agent} did not complete: {source}. Calling again with the same request_id is safe: \
         the provider credits an agent at most once"
    )]
    ClaimFailed { agent: String, source: ProviderError },
    #[error(
        "this provider (the seed's API) has no complete step: its escrows go from funded straight to released \
         (release_escrow) or refunded (dispute_escrow), and the seller need not mark anything. Nothing was changed"
    )]
    NoCompleteStep,
    #[error(
        "the escrow's create ({create}) has not completed (status: {state}), so there is no escrow to mark complete \
         yet. Nothing was changed; call again with the same request_id once it has"
    )]
    NoEscrowYet { create: String, state: String },
    #[error(
        "escrow {id} was not marked complete: {source}. Calling again with the same request_id is safe (the \
         escrow's state machine completes it at most once)"
    )]
    NotMarkedComplete { id: String, source: ProviderError },
}

/// What a refusal says did not happen: a money tool moves money, a direct tool changes an escrow or a
/// balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nothing {
    Moved,
    Changed,
}

impl std::fmt::Display for Nothing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Nothing::Moved => "Nothing was moved.",
            Nothing::Changed => "Nothing was changed.",
        })
    }
}

impl McpError {
    pub fn query(e: datafusion::error::DataFusionError) -> McpError {
        McpError::Query(Box::new(e))
    }

    /// A direct tool's error while it checks whom a call concerns: its refusals say what did not happen
    /// already; anything else is told to have changed nothing.
    pub fn nothing_changed(self) -> McpError {
        match self {
            e @ McpError::NotAdmitted { .. } => e,
            other => McpError::NothingChanged(Box::new(other)),
        }
    }
}
