//! The seed's API (`../shared/api/purpleflea-api.md`, what `pfsync sandbox` serves): payouts and escrow
//! through one key, idempotency keys, lookups by key and list endpoints, as its contract declares. A
//! deployment of it that does not keep keys is declared with `[provider] honours_idempotency_keys = false`.

pub mod client;
pub mod cursor;
pub mod error;
pub mod evidence;
pub mod wire;

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Deserialize;

pub use client::{DEFAULT_API_URL, DEFAULT_FAUCET_URL, SeedClient};
pub use error::SeedError;
pub use evidence::judge;

use self::wire::{EscrowActionRequest, EscrowCreateRequest, Listed, PayoutRequest};
use super::records::{Escrow, ListQuery, Transaction, TxKind, Wallet};
use super::{
    Capabilities, Common, FaucetAnswer, FaucetClaim, Listings, Lookup, LookupContext, PageStream, Provider,
    ProviderError, Receipt,
};
use crate::http::{HttpError, IdempotencyKey};
use crate::operation::{Action, EscrowRef, Operation};

/// How many rows a lookup asks for: one is expected, more are evidence of duplicates or of a provider
/// that ignored the filter.
const LOOKUP_LIMIT: u32 = 10;

/// Pages of transactions (1,000 each) read at most to rule out an unkeyed twin of an operation.
const MAX_TWIN_PAGES: usize = 20;

/// `[provider]` keys of this provider (besides `kind`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSection {
    /// The provider replays a request repeated with the same `Idempotency-Key` and keeps the key on the
    /// transaction (so an outcome can be looked up by it). Default: true, as the seed's contract says.
    /// Set false for a deployment that does not: no POST is then ever repeated after an ambiguous
    /// failure, and an unknown outcome waits for a person.
    pub honours_idempotency_keys: Option<bool>,
}

pub const FIELDS: &[&str] = &["honours_idempotency_keys"];

/// Check `[provider]` for this provider (nothing is read or connected).
pub fn check(section: &toml::Table) -> Result<(), String> {
    parse(section).map(|_| ())
}

fn parse(section: &toml::Table) -> Result<SeedSection, String> {
    SeedSection::deserialize(toml::Value::Table(section.clone())).map_err(|e| e.to_string())
}

/// The seed provider against `--api-url` / `--faucet-url`, with the payer's key.
pub async fn connect(section: &toml::Table, common: &Common) -> Result<Arc<dyn Provider>, ProviderError> {
    let s = parse(section).map_err(ProviderError::Setting)?;
    let client = SeedClient::new(
        common.client.clone(),
        common.faucet_url.clone(),
        SeedProvider::capabilities_for(s.honours_idempotency_keys.unwrap_or(true)).repeat(),
    )
    .map_err(ProviderError::from)?;
    Ok(Arc::new(SeedProvider::new(client, s.honours_idempotency_keys.unwrap_or(true))))
}

pub struct SeedProvider {
    client: SeedClient,
    caps: Capabilities,
}

impl SeedProvider {
    /// `honours_keys` is what the deployment declares; the contract says it does. Lookup by key rests on
    /// the same memory (transactions carry the key the provider kept), so it goes with it. The client
    /// must have been built with the same declaration (`capabilities_for(honours_keys).repeat()`).
    pub fn new(client: SeedClient, honours_keys: bool) -> SeedProvider {
        SeedProvider { client, caps: SeedProvider::capabilities_for(honours_keys) }
    }

    pub fn capabilities_for(honours_keys: bool) -> Capabilities {
        Capabilities {
            honours_idempotency_keys: honours_keys,
            lookup_by_key: honours_keys,
            ledger_evidence: false,
            // The contract: "once per agent, later claims 409 invalid_state".
            faucet_once_per_agent: true,
            // The contract's escrows go funded -> released | refunded: there is no complete endpoint.
            escrow_completion: false,
            // The wallets list endpoint lists every agent.
            wallets_list_every_agent: true,
            // The contract's dispute refunds the buyer: the escrow ends `refunded` at once.
            dispute_resolvable: true,
        }
    }

    pub fn client(&self) -> &SeedClient {
        &self.client
    }

    async fn send(&self, op: &Operation, key: &IdempotencyKey) -> Result<Receipt, SeedError> {
        let c = &self.client;
        let key = Some(key);
        let action = || EscrowActionRequest { reason: op.reason.clone(), extra: Default::default() };
        // The executor binds releases to their create's escrow before sending; an unbound one reaching here
        // is a bug, reported as such (an unknown outcome, never a rejection that would retire the id).
        let unbound = || {
            SeedError::Http(HttpError::BadSetting(format!(
                "operation {} was sent before its create's escrow was known",
                op.id
            )))
        };
        match &op.action {
            Action::Payout { agent, amount } => {
                let req = PayoutRequest { agent_id: agent.clone(), amount_usd: *amount, reason: op.reason.clone() };
                let r = c.payout(&req, key).await?;
                Ok(Receipt { tx_id: Some(r.answer.tx_id), escrow_id: None, replayed: r.replayed })
            }
            Action::EscrowCreate { buyer, seller, amount, description, metadata } => {
                let req = EscrowCreateRequest {
                    buyer_agent_id: buyer.clone(),
                    seller_agent_id: seller.clone(),
                    amount_usd: *amount,
                    description: description.clone(),
                    metadata: metadata.clone(),
                };
                let e = c.escrow_create(&req, key).await?;
                Ok(Receipt { tx_id: None, escrow_id: Some(e.answer.escrow_id), replayed: e.replayed })
            }
            Action::Release { escrow: EscrowRef::Id(id) } => {
                let r = c.escrow_release(id, &action(), key).await?;
                Ok(Receipt { tx_id: Some(r.answer.tx_id), escrow_id: Some(r.answer.escrow_id), replayed: r.replayed })
            }
            Action::Dispute { escrow: EscrowRef::Id(id) } => {
                let r = c.escrow_dispute(id, &action(), key).await?;
                Ok(Receipt { tx_id: Some(r.answer.tx_id), escrow_id: Some(r.answer.escrow_id), replayed: r.replayed })
            }
            Action::Release { escrow: EscrowRef::CreatedBy(_) }
            | Action::Dispute { escrow: EscrowRef::CreatedBy(_) } => Err(unbound()),
        }
    }

    /// An answer with no transaction for the key proves the send never ran only once it can no longer be
    /// running (`ctx.settle` after its intent): before that, it is pending. The provider's key memory then
    /// guards a race, never a resend.
    async fn look_up(
        &self,
        op: &Operation,
        key: &IdempotencyKey,
        ctx: &LookupContext<'_>,
    ) -> Result<Lookup, SeedError> {
        if !self.caps.lookup_by_key {
            return Ok(Lookup::Inconclusive {
                why: "the provider is declared not to keep idempotency keys, so no lookup by key can prove anything"
                    .into(),
            });
        }
        let q = ListQuery {
            idempotency_key: Some(key.as_str().to_string()),
            limit: Some(LOOKUP_LIMIT),
            ..ListQuery::default()
        };
        let page = self.client.list::<Transaction>(&q).await?;
        let settled = ctx.since.is_none_or(|t| ctx.now - t >= ctx.settle);
        match judge(op, key, &page) {
            Lookup::NotExecuted if !settled => Ok(Lookup::Pending {
                why: "no transaction carries the key yet, and the send may still be running at the provider".into(),
            }),
            Lookup::NotExecuted => self.no_unkeyed_twin(op, key, ctx).await,
            other => Ok(other),
        }
    }

    /// "No transaction carries the key" holds only if the provider keeps keys as declared: a transaction
    /// since the intent that does what this operation does under no key (or another) says it does not, and
    /// the outcome is then for a person, never a resend.
    async fn no_unkeyed_twin(
        &self,
        op: &Operation,
        key: &IdempotencyKey,
        ctx: &LookupContext<'_>,
    ) -> Result<Lookup, SeedError> {
        use futures::TryStreamExt;
        let Some(since) = ctx.since else { return Ok(Lookup::NotExecuted) };
        // The provider's clock may be behind ours: look back further than the intent.
        let q = ListQuery { limit: Some(1000), since: Some(since - ctx.settle), ..ListQuery::default() };
        let mut pages = std::pin::pin!(self.client.pages::<Transaction>(q));
        let mut read = 0usize;
        while let Some(page) = pages.try_next().await? {
            let txs: Vec<Transaction> = page.rows.into_iter().flatten().collect();
            if let Some(t) = evidence::unkeyed_twin(op, key, &txs) {
                tracing::warn!(id = %op.id, tx = %t.tx_id, "the provider is declared to keep idempotency keys, but holds a transaction of this operation's kind, agents and amount without its key: it may not keep keys");
                return Ok(Lookup::Inconclusive {
                    why: format!(
                        "no transaction carries the key, but {} ({} {} to {}, key {:?}) since the intent does what \
                         this operation does: the provider may not keep keys as declared ([provider] \
                         honours_idempotency_keys); check its records",
                        t.tx_id,
                        t.kind.as_str(),
                        t.amount_usd,
                        t.agent_id,
                        t.idempotency_key
                    ),
                });
            }
            read += 1;
            if read >= MAX_TWIN_PAGES {
                return Ok(Lookup::Inconclusive {
                    why: format!(
                        "no transaction carries the key, but more than {MAX_TWIN_PAGES} pages of transactions since the \
                         intent could not all be read to rule out an unkeyed one"
                    ),
                });
            }
        }
        Ok(Lookup::NotExecuted)
    }

    /// `POST faucet /claim` under the claim's key. The contract credits an agent once and answers any later
    /// claim 409 `invalid_state`; a key the provider keeps replays a repeat's first answer. After a 409,
    /// a provider that keeps keys is asked whether the credit it refers to was this claim's (a first send
    /// whose answer was lost): then that is the answer, else the agent claimed before.
    async fn claim(&self, agent_id: &str, key: &IdempotencyKey) -> Result<FaucetAnswer, SeedError> {
        let message = match self.client.faucet_claim(agent_id, Some(key)).await {
            Ok(sent) => {
                return Ok(FaucetAnswer::Credited(FaucetClaim {
                    agent_id: sent.answer.agent_id,
                    amount: crate::micros::Micros::from_usd(sent.answer.amount_usd),
                    claim_id: Some(sent.answer.tx_id),
                    replayed: sent.replayed,
                }));
            }
            Err(SeedError::InvalidState { message }) => message,
            Err(e) => return Err(e),
        };
        if self.caps.lookup_by_key {
            let q = ListQuery {
                idempotency_key: Some(key.as_str().to_string()),
                limit: Some(LOOKUP_LIMIT),
                ..ListQuery::default()
            };
            let page = self.client.list::<Transaction>(&q).await?;
            let mine = page.rows.iter().flatten().find(|t| {
                t.kind == TxKind::Faucet && t.agent_id == agent_id && t.idempotency_key.as_deref() == Some(key.as_str())
            });
            if let Some(t) = mine {
                return Ok(FaucetAnswer::Credited(FaucetClaim {
                    agent_id: t.agent_id.clone(),
                    amount: crate::micros::Micros::from_usd(t.amount_usd),
                    claim_id: Some(t.tx_id.clone()),
                    replayed: true,
                }));
            }
        }
        Ok(FaucetAnswer::AlreadyClaimed { message })
    }
}

impl Provider for SeedProvider {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn execute<'a>(
        &'a self,
        op: &'a Operation,
        key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Receipt, ProviderError>> {
        Box::pin(async move { self.send(op, key).await.map_err(ProviderError::from) })
    }

    fn lookup<'a>(
        &'a self,
        op: &'a Operation,
        key: &'a IdempotencyKey,
        ctx: &'a LookupContext<'a>,
    ) -> BoxFuture<'a, Result<Lookup, ProviderError>> {
        Box::pin(async move { self.look_up(op, key, ctx).await.map_err(ProviderError::from) })
    }

    fn listings(&self) -> Option<&dyn Listings> {
        Some(&self.client)
    }

    fn claim_faucet<'a>(
        &'a self,
        agent_id: &'a str,
        key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<FaucetAnswer, ProviderError>> {
        Box::pin(async move { self.claim(agent_id, key).await.map_err(ProviderError::from) })
    }

    fn wallet_now<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProviderError>> {
        Box::pin(async move {
            let w = self.client.wallet(agent_id).await?;
            Ok(Some(serde_json::to_value(&w).map_err(|e| ProviderError::Setting(e.to_string()))?))
        })
    }

    fn escrow_now<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<serde_json::Value, ProviderError>> {
        Box::pin(async move {
            let e = self.client.escrow(escrow_id).await?;
            serde_json::to_value(&e).map_err(|e| ProviderError::Setting(e.to_string()))
        })
    }
}

impl SeedClient {
    fn listing<T: Listed>(&self, query: ListQuery) -> PageStream<'_, T> {
        self.pages::<T>(query).map(|p| p.map_err(ProviderError::from)).boxed()
    }
}

/// The seed's list endpoints are its listings (sync reads them through the client alone).
impl Listings for SeedClient {
    fn wallets(&self, query: ListQuery) -> PageStream<'_, Wallet> {
        self.listing(query)
    }

    fn escrows(&self, query: ListQuery) -> PageStream<'_, Escrow> {
        self.listing(query)
    }

    fn transactions(&self, query: ListQuery) -> PageStream<'_, Transaction> {
        self.listing(query)
    }
}
