//! The payment provider behind one seam. The engine, sync and reconcile ask a provider what it can do
//! ([`Capabilities`]) and branch on the answers, never on which provider it is.
//!
//! Two questions decide whether an unknown outcome can ever be resolved without a person:
//! - does the provider honour idempotency keys (a repeat with the same key replays instead of paying
//!   again)? Only then may anything, the HTTP client included, repeat a POST whose outcome is unknown;
//! - can an outcome be looked up by key? Only then may "the provider has no transaction for this key"
//!   be concluded, and only from a successful answer with zero rows.

pub mod seed;

use std::future::Future;

use crate::api::{ApiError, IdempotencyKey};
use crate::payouts::operation::Operation;

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
}

/// What a successful send came back with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    pub tx_id: Option<String>,
    pub escrow_id: Option<String>,
    /// The provider answered from its idempotency memory: this send moved no money.
    pub replayed: bool,
}

/// What the provider's evidence says about an operation whose outcome was not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The provider answered successfully with no transaction for the key: nothing ran, a send is safe.
    NotExecuted,
    /// It ran: the transaction (and escrow) it made. `duplicates` counts further transactions that carry
    /// the same key and match (recorded; reconcile reports them as `duplicate_at_provider`).
    Executed { tx_id: String, escrow_id: Option<String>, duplicates: usize },
    /// The evidence proves nothing either way (an undecodable row, a row of another operation, a
    /// provider that cannot look up by key). The operation stays unknown; it is never resent on this.
    Inconclusive { why: String },
}

/// The engine's view of a payment provider.
pub trait Provider: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// Send one operation under its key. Errors are classified by the caller (`state::classify`).
    fn execute(&self, op: &Operation, key: &IdempotencyKey) -> impl Future<Output = Result<Receipt, ApiError>> + Send;

    /// Find out whether an operation sent earlier ran, from the provider's own records.
    fn lookup(&self, op: &Operation, key: &IdempotencyKey) -> impl Future<Output = Result<Lookup, ApiError>> + Send;
}
