//! The payment provider behind one seam. Everything that differs between providers is a method of
//! [`Provider`] or a [`Capabilities`] answer; the engine, sync, reconcile and the MCP tools ask those and
//! branch on the answers, never on which provider it is. Each provider is a folder of its own (its
//! client, wire types and error type); [`registry`] is the one place that knows them by name.
//!
//! Two questions decide whether an unknown outcome can ever be resolved without a person:
//! - does the provider honour idempotency keys (a repeat with the same key replays instead of paying
//!   again)? Only then may anything, the HTTP client included, repeat a POST whose outcome is unknown;
//! - can an outcome be looked up, by key or from the payer's ledger? Only then may "it never ran" be
//!   concluded, and only from evidence that proves it.

pub mod agent;
pub mod error;
pub mod live;
pub mod records;
pub mod registry;
#[cfg(feature = "test-hooks")]
pub mod scripted;
pub mod seed;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::http::{ClientConfig, IdempotencyKey, Repeat};
use crate::operation::Operation;

pub use agent::{Completion, FaucetAnswer, FaucetClaim};
pub use error::{ProviderError, Verdict};
pub use records::{AgentWallet, EscrowRecord, LedgerEntry};
pub use registry::{ProviderSettings, connect};
/// The default provider's bases: what `--api-url` and `--faucet-url` default to.
pub use seed::{DEFAULT_API_URL, DEFAULT_FAUCET_URL};

/// What every provider is built from besides its own `[provider]` keys.
#[derive(Debug, Clone)]
pub struct Common {
    /// The client settings (timeouts, retries, limits), against `--api-url`, with the payer's key
    /// (`PURPLEFLEA_API_KEY` / `--api-key-file`).
    pub client: ClientConfig,
    /// `--faucet-url`.
    pub faucet_url: url::Url,
}

/// What a provider declares about itself. Every field defaults to the cautious answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// A request repeated with the same `Idempotency-Key` is replayed, never executed twice.
    pub honours_idempotency_keys: bool,
    /// The transaction an operation made can be found by its idempotency key.
    pub lookup_by_key: bool,
    /// Unknown outcomes can be resolved from the payer's own ledger (entries after the intent that no
    /// logged operation claimed), and from an escrow's state.
    pub ledger_evidence: bool,
    /// A faucet credits each agent at most once and refuses every later claim, so a claim whose outcome is
    /// unknown may be sent again (see [`agent`]).
    pub faucet_once_per_agent: bool,
    /// Escrows have a complete step, taken with the counterparty's key (`funded -> completed`) before the
    /// creator releases.
    pub escrow_completion: bool,
    /// The synced wallets table lists every agent a payout may go to, so a payee it does not list is
    /// refused before anything moves (`--no-agent-check` turns the check off). A provider that answers
    /// only about the agents whose keys pfsync holds cannot say that: the payee check is then its own
    /// (an unknown payee is refused by the provider, `recipient_not_found`).
    pub wallets_list_every_agent: bool,
    /// A disputed escrow reaches a final state without anyone at the provider (the seed's contract refunds
    /// the buyer at once). Where it does not (the live escrow service freezes a disputed escrow for its
    /// staff to review, with no endpoint to resolve it), a dispute locks the money until a person acts, so
    /// agent-facing tools dispute only where the operator said so explicitly.
    pub dispute_resolvable: bool,
}

impl Capabilities {
    /// Can an unknown outcome be resolved without a person at all?
    pub fn can_resolve(&self) -> bool {
        self.lookup_by_key || self.ledger_evidence
    }

    /// When the HTTP client may repeat a POST: the one rule, derived from the one declaration.
    pub fn repeat(&self) -> Repeat {
        if self.honours_idempotency_keys { Repeat::KeyedPosts } else { Repeat::OnlyUnsent }
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
    /// pfsync's own copy of the payer's ledger (`purpleflea.ledger.entries`), oldest first, gap-free:
    /// from the newest copied entry before the intent (less an hour) to the newest copied. Empty where
    /// the provider is not resolved from ledgers or nothing was copied.
    pub copied: &'a [LedgerEntry],
    /// `copied` begins at the payer's very first ledger entry (`ledger::history::CopiedTail`): no entry was
    /// written before it, so it reaches back to any time however little the payer's ledger holds.
    pub copied_from_origin: bool,
    /// An intent of this create was logged without an escrow tag: before tags named the namespace, so its
    /// escrow may carry the old form (`legacy_escrow_tag`). Only then does evidence accept that form.
    pub legacy_escrow_tag: bool,
}

/// Why a provider refuses an operation before anything moves (into the rejects table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// The operation needs the key of an agent pfsync does not hold.
    AgentKeyNotHeld,
    /// An escrow's timeout is outside what the provider takes.
    InvalidTimeoutHours,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
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

/// A provider that lists its records (the seed's contract): sync reads the pages of what changed since a
/// time, each row decoded on its own. A listing that cannot be followed (a cursor seen before) ends with
/// an error instead of its next page.
pub trait Listings: Send + Sync {
    fn wallets(&self, query: records::ListQuery) -> PageStream<'_, records::Wallet>;
    fn escrows(&self, query: records::ListQuery) -> PageStream<'_, records::Escrow>;
    fn transactions(&self, query: records::ListQuery) -> PageStream<'_, records::Transaction>;
}

/// The pages of one listing, in order.
pub type PageStream<'a, T> = BoxStream<'a, Result<records::Page<T>, ProviderError>>;

/// A provider that lists nothing and answers each agent only to its own key (Purple Flea's live
/// services): what can be read is each held agent's wallet and its newest ledger entries, and escrows by id.
pub trait HeldAgents: Send + Sync {
    /// The agents whose keys pfsync holds, the payer first.
    fn agent_ids(&self) -> Vec<String>;
    /// The agent that pays out and creates escrows.
    fn payer_id(&self) -> &str;
    /// How many entries a ledger read answers at most (its newest): more written between two reads is a gap.
    fn ledger_window(&self) -> usize;
    /// Escrows to read besides those the payout log names (there is no list to find them in).
    fn escrow_ids(&self) -> &[String];
    fn wallet<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<AgentWallet, ProviderError>>;
    fn ledger<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Vec<LedgerEntry>, ProviderError>>;
    fn escrow<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<EscrowRecord, ProviderError>>;
}

/// The engine's, sync's and the tools' view of a payment provider.
pub trait Provider: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// Send one operation under its key. What a failure means is [`ProviderError::verdict`].
    fn execute<'a>(
        &'a self,
        op: &'a Operation,
        key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Receipt, ProviderError>>;

    /// Find out whether an operation sent earlier ran, from the provider's own records.
    fn lookup<'a>(
        &'a self,
        op: &'a Operation,
        key: &'a IdempotencyKey,
        ctx: &'a LookupContext<'a>,
    ) -> BoxFuture<'a, Result<Lookup, ProviderError>>;

    /// Escrow actions attempted after their escrow's `auto_release_at` so far (the provider refunds such an
    /// escrow to its creator on its own schedule, so the action may fail or come too late).
    fn past_auto_release(&self) -> u64 {
        0
    }

    /// The agent an operation debits, where the provider pays from an agent's own balance (Purple Flea's
    /// live services: the payer of a payout, the buyer of an escrow create). `None` where the provider pays
    /// from an account pfsync does not see as an agent, or the operation debits nobody.
    fn payer_of(&self, _op: &Operation) -> Option<String> {
        None
    }

    /// The tag the escrow a create makes carries in its description, where this provider's evidence finds
    /// the escrow by it (see `IdempotencyKey::escrow_tag`). `None` where the key is the evidence and no tag
    /// is written.
    fn escrow_tag(&self, _op: &Operation, _key: &IdempotencyKey) -> Option<String> {
        None
    }

    /// Refuse an operation this provider can never carry out as configured (an agent whose key is not
    /// held), before anything moves. `None`: it may go ahead.
    fn refuse(&self, _op: &Operation) -> Option<Refusal> {
        None
    }

    /// The seed's list endpoints, where the provider has them.
    fn listings(&self) -> Option<&dyn Listings> {
        None
    }

    /// The held agents' records, where that is all the provider answers.
    fn held_agents(&self) -> Option<&dyn HeldAgents> {
        None
    }

    /// Claim the faucet for `agent_id`; `key` is the claim's idempotency key (sent where it is honoured).
    /// Only called where [`Capabilities::faucet_once_per_agent`] holds (see [`agent`]).
    fn claim_faucet<'a>(
        &'a self,
        _agent_id: &'a str,
        _key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<FaucetAnswer, ProviderError>> {
        Box::pin(async { Err(ProviderError::Setting("this provider declares no faucet".into())) })
    }

    /// Mark an escrow's task complete with its counterparty's key, where
    /// [`Capabilities::escrow_completion`] holds.
    fn mark_complete<'a>(&'a self, _escrow_id: &'a str) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async { Err(ProviderError::Setting("this provider's escrows have no complete step".into())) })
    }

    /// An agent's wallet as the provider answers it now, for an agent-facing read (`None`: the provider
    /// answers it only to a key pfsync does not hold).
    fn wallet_now<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProviderError>>;

    /// An escrow as the provider answers it now, for an agent-facing read.
    fn escrow_now<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<serde_json::Value, ProviderError>>;
}
