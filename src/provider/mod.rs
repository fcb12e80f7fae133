//! The payment provider behind one seam. The engine, sync and reconcile ask a provider what it can do
//! ([`Capabilities`]) and branch on the answers, never on which provider it is.
//!
//! Two questions decide whether an unknown outcome can ever be resolved without a person:
//! - does the provider honour idempotency keys (a repeat with the same key replays instead of paying
//!   again)? Only then may anything, the HTTP client included, repeat a POST whose outcome is unknown;
//! - can an outcome be looked up by key? Only then may "the provider has no transaction for this key"
//!   be concluded, and only from a successful answer with zero rows.

pub mod agent;
pub mod live;
pub mod seed;

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::api::{ApiError, IdempotencyKey};
use crate::payouts::operation::Operation;

pub use agent::{AgentActions, Completion, FaucetAnswer, FaucetClaim};
pub use live::LiveProvider;
pub use seed::SeedProvider;

/// What a provider declares about itself. Every field defaults to the cautious answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// A request repeated with the same `Idempotency-Key` is replayed, never executed twice.
    pub honours_idempotency_keys: bool,
    /// The transaction an operation made can be found by its idempotency key.
    pub lookup_by_key: bool,
    /// Wallets, escrows and transactions can be listed (sync and reconcile read them).
    pub list_endpoints: bool,
    /// Escrow takes a commission from the amount (the seed's API takes none).
    pub escrow_fee: bool,
    /// Unknown outcomes can be resolved from the payer's own ledger (entries after the intent that no
    /// logged operation claimed), and from an escrow's state.
    pub ledger_evidence: bool,
    /// A faucet credits each agent at most once and refuses every later claim, so a claim whose outcome is
    /// unknown may be sent again (see [`agent`]).
    pub faucet_once_per_agent: bool,
    /// Escrows have a complete step, taken with the counterparty's key (`funded -> completed`) before the
    /// creator releases.
    pub escrow_completion: bool,
}

impl Capabilities {
    /// Can an unknown outcome be resolved without a person at all?
    pub fn can_resolve(&self) -> bool {
        self.lookup_by_key || self.ledger_evidence
    }
}

/// What the engine knows when it asks for evidence about one operation.
#[derive(Debug, Clone, Copy)]
pub struct LookupContext<'a> {
    /// When the intent of the attempt in question was recorded (`None`: the log has no time for it).
    pub since: Option<DateTime<Utc>>,
    /// Provider references that logged operations already own.
    pub claimed: &'a HashSet<String>,
    /// The error code the attempt ended with (a provider's 5xx code can say a retry is unsafe).
    pub last_error: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// How long after an intent a send may still be running at the provider.
    pub settle: chrono::Duration,
}

/// Why an operation is refused before anything moves (into the rejects table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: crate::payouts::validate::RejectCode,
    pub message: String,
}

/// What a successful send came back with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    pub tx_id: Option<String>,
    pub escrow_id: Option<String>,
    /// The provider answered from its idempotency memory: this send moved no money.
    pub replayed: bool,
}

/// Where a resolved outcome's evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A transaction carrying the operation's idempotency key.
    Key,
    /// The payer's ledger: one debit after the intent that no logged operation claimed.
    Ledger,
    /// The escrow's own state (and, for a create, its description naming the operation).
    EscrowState,
}

impl Evidence {
    pub fn describe(self) -> &'static str {
        match self {
            Evidence::Key => "resolved by idempotency-key lookup",
            Evidence::Ledger => "resolved from the payer's ledger",
            Evidence::EscrowState => "resolved from the escrow's state",
        }
    }
}

/// What the provider's evidence says about an operation whose outcome was not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The provider answered successfully with no transaction for the key: nothing ran, a send is safe.
    NotExecuted,
    /// It ran: the transaction (and escrow) it made. `duplicates` counts further transactions that carry
    /// the same key and match (recorded; reconcile reports them as `duplicate_at_provider`).
    Executed { tx_id: Option<String>, escrow_id: Option<String>, duplicates: usize, evidence: Evidence },
    /// The evidence proves nothing either way (an undecodable row, a row of another operation, a
    /// provider that cannot look up by key). The operation stays unknown; it is never resent on this.
    Inconclusive { why: String },
    /// Nothing yet, but a send of this attempt may still be running at the provider: ask again later (the
    /// operation stays unknown; no person is needed yet).
    Pending { why: String },
}

/// The engine's view of a payment provider.
pub trait Provider: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// Send one operation under its key. Errors are classified by the caller (`state::classify`).
    fn execute(&self, op: &Operation, key: &IdempotencyKey) -> impl Future<Output = Result<Receipt, ApiError>> + Send;

    /// Find out whether an operation sent earlier ran, from the provider's own records.
    fn lookup(
        &self,
        op: &Operation,
        key: &IdempotencyKey,
        ctx: &LookupContext<'_>,
    ) -> impl Future<Output = Result<Lookup, ApiError>> + Send;

    /// Escrow actions attempted after their escrow's `auto_release_at` so far (the provider refunds such an
    /// escrow to its creator on its own schedule, so the action may fail or come too late).
    fn past_auto_release(&self) -> u64 {
        0
    }

    /// Refuse an operation this provider can never carry out as configured (an agent whose key is not
    /// held), before anything moves. `None`: it may go ahead.
    fn refuse(&self, _op: &Operation) -> Option<Refusal> {
        None
    }
}
