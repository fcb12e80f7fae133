//! Purple Flea's services as they run (`../shared/purpleflea-live/README.md`): the casino (`…/api/v1`:
//! keys, balances, the ledger, `POST /stats/pay`) and the escrow service, with one key per agent, no
//! idempotency keys, no list endpoints and a 1% escrow commission.
//!
//! What that means for exactly once:
//! - nothing is ever repeated after an ambiguous failure (the client is built with `keys_honoured` off);
//! - an unknown payout or escrow create is resolved from the payer's ledger ([`evidence`]); a create is
//!   confirmed by `GET /escrow/{id}`, whose description carries the operation's id;
//! - releases and disputes are guarded by the escrow's state machine (a second release answers 409), so
//!   their outcome is read from the escrow's state.

pub mod error;
pub mod evidence;
pub mod keys;
pub mod settings;
pub mod wire;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use self::error::LiveError;
use self::evidence::{absent, candidates, describe, from_secs, judge_payment, reaching_back};
use self::keys::{Agent, KeyRing};
pub use self::settings::{FIELDS, LiveSettings, agent_keys, check};
use self::wire::*;
use super::records::{AgentWallet, EscrowRecord, LedgerEntry};
use super::{
    Capabilities, Common, Completion, Evidence, FaucetAnswer, FaucetClaim, HeldAgents, Lookup, LookupContext, Provider,
    ProviderError, Receipt, Refusal, RefusalCode,
};
use crate::http::{Client, ClientConfig, HttpError, IdempotencyKey};
use crate::micros::Micros;
use crate::operation::{Action, EscrowRef, Operation};

/// Default public endpoints.
pub const DEFAULT_CASINO_URL: &str = "https://casino.purpleflea.com/api/v1";
pub const DEFAULT_ESCROW_URL: &str = "https://escrow.purpleflea.com";
pub const DEFAULT_FAUCET_URL: &str = "https://faucet.purpleflea.com";

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// `timeout_hours` of an escrow whose action row does not set one (the service's own default is 24).
    pub escrow_timeout_hours: u32,
    /// How far the provider's clock may be behind ours: ledger entries this much before an intent are
    /// still searched.
    pub clock_skew_secs: i64,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions { escrow_timeout_hours: 24, clock_skew_secs: 30 }
    }
}

/// What Purple Flea's live services are, declared once: no idempotency keys (nothing is repeated after an
/// ambiguous failure, and no lookup by key), outcomes resolved from the payer's ledger and the escrows'
/// state, a faucet that credits each agent once, escrows with a complete step, and a wallets table that
/// lists only the held agents.
pub const CAPABILITIES: Capabilities = Capabilities {
    honours_idempotency_keys: false,
    lookup_by_key: false,
    ledger_evidence: true,
    // The faucet service refuses a second claim per agent (409 already_claimed).
    faucet_once_per_agent: true,
    escrow_completion: true,
    wallets_list_every_agent: false,
    // `POST /escrow/dispute/{id}` freezes the escrow for Purple Flea's staff; no endpoint resolves it.
    dispute_resolvable: false,
};

/// Connect: every held key is checked with the casino (whose agent it is) before any step runs, so a
/// wrong or missing key stops the run before anything is touched.
pub async fn connect(section: &toml::Table, common: &Common) -> Result<Arc<dyn Provider>, ProviderError> {
    let live = LiveSettings::resolve(section).map_err(ProviderError::Setting)?;
    let payer = common.client.api_key.clone().ok_or_else(|| ProviderError::Setting("no payer key".into()))?;
    let ring = KeyRing::connect(
        &common.client,
        &live.casino_url,
        &live.escrow_url,
        payer,
        live.agent_keys.clone(),
        CAPABILITIES.repeat(),
    )
    .await?;
    tracing::info!(payer = %ring.payer().agent_id, agents = ring.agents().count(), "live provider: keys checked with the casino");
    let provider = LiveProvider::new(ring, live.options.clone())
        .with_faucet(faucet_client(&common.client, &live)?)
        .with_escrow_ids(live.escrow_ids.clone());
    Ok(Arc::new(provider))
}

/// The live faucet's client. The faucet takes no key, so it is never sent one of pfsync's; and it is tried
/// once: its refusals (409 already claimed, 429 once per IP and day) do not pass by waiting a few seconds.
fn faucet_client(template: &ClientConfig, live: &LiveSettings) -> Result<Client, ProviderError> {
    let mut c = template.at(live.faucet_url.clone());
    c.api_key = None;
    c.retry.max_attempts = 1;
    Ok(Client::new(c, CAPABILITIES.repeat())?)
}

pub struct LiveProvider {
    ring: KeyRing,
    opts: LiveOptions,
    late: std::sync::atomic::AtomicU64,
    /// The faucet service (`POST /faucet/claim`), when one is configured.
    faucet: Option<Client>,
    /// `[provider] escrow_ids`: escrows to sync besides those the payout log names.
    escrow_ids: Vec<String>,
}

/// The tag at the end of an escrow's description that names the create that made it:
/// `[pfsync:<namespace>:<action id>]` (see `IdempotencyKey::escrow_tag`).
pub fn description_tag(op: &Operation, key: &IdempotencyKey) -> Result<String, LiveError> {
    key.escrow_tag(&op.id).ok_or_else(|| {
        LiveError::Setting(format!("operation {}: the key {key} names no namespace for the escrow's tag", op.id))
    })
}

fn refused(code: &str, message: String) -> LiveError {
    LiveError::Refused { status: 403, code: code.to_string(), message }
}

impl LiveProvider {
    pub fn new(ring: KeyRing, opts: LiveOptions) -> LiveProvider {
        LiveProvider { ring, opts, late: Default::default(), faucet: None, escrow_ids: Vec::new() }
    }

    pub fn with_escrow_ids(mut self, ids: Vec<String>) -> LiveProvider {
        self.escrow_ids = ids;
        self
    }

    /// With the faucet service at this client's base URL. The faucet takes no key: the client is built with
    /// none of pfsync's.
    pub fn with_faucet(mut self, faucet: Client) -> LiveProvider {
        self.faucet = Some(faucet);
        self
    }

    pub fn keys(&self) -> &KeyRing {
        &self.ring
    }

    /// `timeout_hours` for a create: the action row's `metadata.timeout_hours`, else the configured default.
    fn timeout_hours(&self, op: &Operation) -> Result<u32, String> {
        let Action::EscrowCreate { metadata, .. } = &op.action else { return Ok(self.opts.escrow_timeout_hours) };
        match metadata.as_ref().and_then(|m| m.get("timeout_hours")) {
            None | Some(serde_json::Value::Null) => Ok(self.opts.escrow_timeout_hours),
            Some(v) => match v.as_u64() {
                Some(h @ 1..=720) => Ok(h as u32),
                _ => Err(format!("metadata.timeout_hours must be a whole number of hours in 1..=720, got {v}")),
            },
        }
    }

    fn held(&self, agent_id: &str, role: &str) -> Result<&Agent, LiveError> {
        self.ring.get(agent_id).ok_or_else(|| {
            refused("agent_key_not_held", format!("pfsync holds no key of agent {agent_id}, the escrow's {role}"))
        })
    }

    /// `GET /escrow/{id}` (no key needed; sent with the payer's).
    pub async fn escrow(&self, id: &str) -> Result<EscrowRecord, LiveError> {
        self.ring.payer().escrow.get_json(&["escrow", id]).await.map_err(LiveError::from_http)
    }

    /// `GET /auth/balance` with the agent's own key (the casino answers no other); `None` when pfsync holds
    /// no key of that agent.
    pub async fn balance_of(&self, agent_id: &str) -> Result<Option<Balance>, LiveError> {
        match self.ring.get(agent_id) {
            Some(a) => Ok(Some(a.casino.get_json(&["auth", "balance"]).await.map_err(LiveError::from_http)?)),
            None => Ok(None),
        }
    }

    async fn ledger_of(&self, agent: &Agent) -> Result<Vec<LedgerEntry>, LiveError> {
        Ok(agent.casino.get_json::<Ledger>(&["auth", "ledger"]).await.map_err(LiveError::from_http)?.entries)
    }

    /// A POST with the agent's key; the services' refusals read as such.
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        client: &Client,
        segments: &[&str],
        body: &B,
    ) -> Result<T, LiveError> {
        client.post_json(segments, body).await.map_err(LiveError::from_http)
    }

    async fn release(&self, id: &str) -> Result<Receipt, LiveError> {
        let esc = self.escrow(id).await?;
        let creator = self.held(&esc.creator_id, "creator")?;
        self.warn_if_late(&esc, "release");
        // The counterparty marks the task complete when we hold its key; the release does not need it.
        if esc.status == "funded"
            && let Some(cp) = self.ring.get(&esc.counterparty_id)
        {
            // Marking it complete moves no money and the release does not need it: a failed or unanswered
            // complete is only a warning.
            if let Err(e) = Self::post::<_, Ack>(&cp.escrow, &["escrow", "complete", id], &serde_json::json!({})).await
            {
                tracing::warn!(escrow = %id, error = %e, "the counterparty's complete failed; releasing all the same");
            }
        }
        Self::post::<_, Ack>(&creator.escrow, &["escrow", "release", id], &serde_json::json!({})).await?;
        Ok(Receipt { tx_id: Some(format!("{id}_release")), escrow_id: Some(id.to_string()), replayed: false })
    }

    /// Warn and count an action on an escrow past its `auto_release_at`: the service's timeout job (every
    /// 5 minutes) refunds such an escrow to its creator, less the commission, whatever pfsync asks.
    fn warn_if_late(&self, esc: &EscrowRecord, action: &str) {
        if past(&esc.auto_release_at) {
            self.late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(escrow = %esc.escrow_id, status = %esc.status, auto_release_at = %esc.auto_release_at,
                "{action} after the escrow's auto_release_at: the service refunds it to the creator (less the commission) on its own");
        }
    }

    async fn dispute(&self, id: &str, reason: &str) -> Result<Receipt, LiveError> {
        let esc = self.escrow(id).await?;
        // Either party may dispute: the creator's key if held, else the counterparty's.
        let party = match self.ring.get(&esc.creator_id) {
            Some(a) => a,
            None => self.held(&esc.counterparty_id, "counterparty (nor its creator)")?,
        };
        self.warn_if_late(&esc, "dispute");
        Self::post::<_, Ack>(&party.escrow, &["escrow", "dispute", id], &DisputeRequest { reason }).await?;
        Ok(Receipt { tx_id: None, escrow_id: Some(id.to_string()), replayed: false })
    }

    /// An unknown create: `escrow_lock` debits of the amount on the creator's ledger since the intent, each
    /// confirmed (or not) by the escrow's own record, whose description names the operation.
    async fn lookup_create(
        &self,
        op: &Operation,
        buyer: &str,
        seller: &str,
        amount: Micros,
        key: &IdempotencyKey,
        ctx: &LookupContext<'_>,
    ) -> Result<Lookup, LiveError> {
        let creator = self.held(buyer, "creator")?;
        let Some(from) = from_secs(ctx, self.opts.clock_skew_secs) else {
            return Ok(Lookup::Inconclusive { why: "the log has no time for the intent".into() });
        };
        let live = self.ledger_of(creator).await?;
        let reach = reaching_back(&live, ctx.copied, ctx.copied_from_origin, from);
        let entries = reach.entries;
        // A create that failed inside the service (`internal_error`) locked the amount and refunded it at once,
        // and its escrow does not exist (404): no escrow, no money moved, nobody's outcome.
        let refunded = |esc: &str| {
            let reason = format!("escrow_create_failed_refund: {esc}");
            entries.iter().any(|e| !e.is_debit() && e.reason == reason)
        };
        let found = candidates(
            &entries,
            from,
            amount,
            ctx.claimed,
            |e| e.reason.starts_with("escrow_lock: ") && e.reference.as_deref().is_none_or(|esc| !refunded(esc)),
            |e| Some(e.id.clone()),
        );
        let tag = description_tag(op, key)?;
        // The old form could be any namespace's: only a create logged before tags named the namespace
        // (`LookupContext::legacy_escrow_tag`) may have sent it.
        let legacy = ctx.legacy_escrow_tag.then(|| crate::http::idempotency::legacy_escrow_tag(&op.id));
        let tagged = |d: &str| d.ends_with(&tag) || legacy.as_deref().is_some_and(|l| d.ends_with(l));
        for c in &found {
            let Some(esc_id) = c.reference.as_deref() else { continue };
            let esc = self.escrow(esc_id).await?;
            if tagged(&esc.description) && esc.counterparty_id == seller && esc.creator_id == buyer {
                return Ok(Lookup::Executed {
                    tx_id: Some(c.id.clone()),
                    escrow_id: Some(esc.escrow_id),
                    duplicates: 0,
                    evidence: Evidence::EscrowState,
                });
            }
        }
        // No lock of this amount since the intent names this operation: as if there were none at all.
        let what = if found.is_empty() {
            format!("escrow_lock debit of {amount}")
        } else {
            format!("escrow naming this operation among the escrow_lock debits of {amount} ({})", describe(&found))
        };
        Ok(absent(reach.covers, ctx, &what))
    }
}

impl LiveProvider {
    /// The ledger's times are the casino's, the intents' ours: when the casino's `Date` shows the clocks
    /// apart by more than `clock_skew_secs`, no ledger window can be placed, and nothing is judged from it
    /// (the outcome stays unknown for a person; never a resend).
    fn clock_too_far(&self) -> Option<String> {
        let m = self.ring.payer().casino.clock_offset()?;
        let apart = m.at_least_secs();
        (apart > self.opts.clock_skew_secs).then(|| {
            let side = if m.offset < chrono::Duration::zero() { "behind" } else { "ahead of" };
            format!(
                "the casino's clock is at least {apart} s {side} this machine's (measured from its Date header), \
                 more than clock_skew_secs = {}: its ledger times cannot be compared with the intent's; fix the \
                 clock (or the setting) and rerun, or settle it with pfsync resolve",
                self.opts.clock_skew_secs
            )
        })
    }

    /// `POST /faucet/claim {agent_casino_id}`: credits $1 once per agent, and answers 409 `already_claimed`
    /// to any later claim (registration already claims it for most agents).
    async fn claim(&self, agent_id: &str) -> Result<FaucetAnswer, LiveError> {
        let faucet =
            self.faucet.as_ref().ok_or_else(|| LiveError::Setting("no faucet service is configured".into()))?;
        match Self::post::<_, FaucetCredited>(
            faucet,
            &["faucet", "claim"],
            &FaucetClaimRequest { agent_casino_id: agent_id },
        )
        .await
        {
            Ok(a) => Ok(FaucetAnswer::Credited(FaucetClaim {
                agent_id: a.agent_id,
                amount: a.credited,
                claim_id: a.claim_id,
                replayed: false,
            })),
            Err(LiveError::Refused { code, message, .. }) if code == "already_claimed" => {
                Ok(FaucetAnswer::AlreadyClaimed { message })
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /escrow/complete/{id}` with the counterparty's key. The state machine takes it from `funded`
    /// only and answers a second one 409: after any failure the escrow's own state says what happened.
    async fn complete(&self, id: &str) -> Result<Completion, LiveError> {
        let esc = self.escrow(id).await?;
        let cp = self.held(&esc.counterparty_id, "counterparty (only the counterparty may mark it complete)")?;
        let done = |esc: EscrowRecord, already: bool| Completion {
            escrow_id: esc.escrow_id,
            status: esc.status,
            counterparty_id: esc.counterparty_id,
            completed_at: esc.completed_at,
            already,
        };
        if esc.status != "funded" {
            return if esc.completed_at.is_some() {
                Ok(done(esc, true))
            } else {
                Err(refused(
                    "invalid_status",
                    format!("escrow {id} is {} and was never completed: it can no longer be", esc.status),
                ))
            };
        }
        self.warn_if_late(&esc, "complete");
        let sent = Self::post::<_, Ack>(&cp.escrow, &["escrow", "complete", id], &serde_json::json!({})).await;
        // Whatever the answer (a lost one, a 409 after a race), the escrow's state is the outcome.
        let after = self.escrow(id).await?;
        match sent {
            _ if after.completed_at.is_some() => Ok(done(after, false)),
            Err(e) => Err(e),
            Ok(_) => Err(LiveError::Http(HttpError::Unexpected {
                endpoint: format!("POST /escrow/complete/{id}"),
                status: 200,
                detail: format!("answered success but the escrow is {} with no completed_at", after.status),
            })),
        }
    }
}

/// Has an ISO timestamp passed? An unreadable one counts as not passed (only a warning rides on it).
fn past(iso: &str) -> bool {
    DateTime::parse_from_rfc3339(iso).is_ok_and(|t| t.with_timezone(&Utc) < Utc::now())
}

impl LiveProvider {
    fn refusal(&self, op: &Operation) -> Option<Refusal> {
        match &op.action {
            Action::EscrowCreate { buyer, .. } if !self.ring.holds(buyer) => Some(Refusal {
                code: RefusalCode::AgentKeyNotHeld,
                message: format!(
                    "the escrow's buyer {buyer} creates and funds it, and pfsync holds no key of that agent \
                     (held: the payer and the agent keys in [provider])"
                ),
            }),
            Action::EscrowCreate { .. } => {
                self.timeout_hours(op).err().map(|message| Refusal { code: RefusalCode::InvalidTimeoutHours, message })
            }
            _ => None,
        }
    }

    async fn send(&self, op: &Operation, key: &IdempotencyKey) -> Result<Receipt, LiveError> {
        let unbound =
            || LiveError::Setting(format!("operation {} was sent before its create's escrow was known", op.id));
        match &op.action {
            Action::Payout { agent, amount } => {
                let req = PayRequest { to_agent_id: agent, amount: Micros::from_usd(*amount).to_json_number() };
                let a: PayAnswer = Self::post(&self.ring.payer().casino, &["stats", "pay"], &req).await?;
                Ok(Receipt { tx_id: Some(a.tx_id), ..Receipt::default() })
            }
            Action::EscrowCreate { buyer, seller, amount, description, .. } => {
                let creator = self.held(buyer, "buyer")?;
                let hours = self.timeout_hours(op).map_err(|m| refused("invalid_timeout_hours", m))?;
                let description = format!("{} {}", description.trim(), description_tag(op, key)?);
                let req = EscrowCreateRequest {
                    amount_usd: Micros::from_usd(*amount).to_json_number(),
                    description: &description,
                    counterparty_agent_id: seller,
                    timeout_hours: hours,
                };
                let e: EscrowCreated = Self::post(&creator.escrow, &["escrow", "create"], &req).await?;
                Ok(Receipt {
                    tx_id: Some(format!("{}_debit", e.escrow_id)),
                    escrow_id: Some(e.escrow_id),
                    ..Receipt::default()
                })
            }
            Action::Release { escrow: EscrowRef::Id(id) } => self.release(id).await,
            Action::Dispute { escrow: EscrowRef::Id(id) } => self.dispute(id, &op.reason).await,
            Action::Release { escrow: EscrowRef::CreatedBy(_) }
            | Action::Dispute { escrow: EscrowRef::CreatedBy(_) } => Err(unbound()),
        }
    }

    async fn look_up(
        &self,
        op: &Operation,
        key: &IdempotencyKey,
        ctx: &LookupContext<'_>,
    ) -> Result<Lookup, LiveError> {
        if let Some(why) = self.clock_too_far() {
            return Ok(Lookup::Inconclusive { why });
        }
        match &op.action {
            Action::Payout { agent, amount } => {
                let entries = self.ledger_of(self.ring.payer()).await?;
                // Where the payee's key is held, its ledger corroborates a candidate (a payment made
                // outside pfsync to someone else, of the same amount, is then no candidate).
                let payee = match self.ring.get(agent) {
                    Some(a) => Some(self.ledger_of(a).await?),
                    None => None,
                };
                Ok(judge_payment(&entries, payee.as_deref(), Micros::from_usd(*amount), ctx, self.opts.clock_skew_secs))
            }
            Action::EscrowCreate { buyer, seller, amount, .. } => {
                self.lookup_create(op, buyer, seller, Micros::from_usd(*amount), key, ctx).await
            }
            Action::Release { escrow: EscrowRef::Id(id) } | Action::Dispute { escrow: EscrowRef::Id(id) } => {
                let esc = self.escrow(id).await?;
                let done = if matches!(op.action, Action::Release { .. }) { "released" } else { "disputed" };
                if esc.status == done {
                    let tx_id = matches!(op.action, Action::Release { .. }).then(|| format!("{id}_release"));
                    return Ok(Lookup::Executed {
                        tx_id,
                        escrow_id: Some(id.clone()),
                        duplicates: 0,
                        evidence: Evidence::EscrowState,
                    });
                }
                // A release that failed half-way (`release_failed`) may have credited the counterparty
                // without moving the escrow on: a resend could credit it again.
                if ctx.last_error.is_some_and(|c| c.contains("release_failed")) {
                    return Ok(Lookup::Inconclusive {
                        why: format!(
                            "the release failed inside the provider (release_failed) and escrow {id} is {}: \
                                      the counterparty may have been credited; check its ledger",
                            esc.status
                        ),
                    });
                }
                // The state machine guards a resend: it can only do what has not been done.
                Ok(Lookup::NotExecuted)
            }
            Action::Release { escrow: EscrowRef::CreatedBy(_) }
            | Action::Dispute { escrow: EscrowRef::CreatedBy(_) } => {
                Ok(Lookup::Inconclusive { why: "the create's escrow is not known yet".into() })
            }
        }
    }
}

impl Provider for LiveProvider {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn past_auto_release(&self) -> u64 {
        self.late.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn refuse(&self, op: &Operation) -> Option<Refusal> {
        self.refusal(op)
    }

    fn payer_of(&self, op: &Operation) -> Option<String> {
        match &op.action {
            Action::Payout { .. } => Some(self.ring.payer().agent_id.clone()),
            Action::EscrowCreate { buyer, .. } => Some(buyer.clone()),
            Action::Release { .. } | Action::Dispute { .. } => None,
        }
    }

    fn escrow_tag(&self, op: &Operation, key: &IdempotencyKey) -> Option<String> {
        matches!(op.action, Action::EscrowCreate { .. }).then(|| description_tag(op, key).ok()).flatten()
    }

    fn execute<'a>(
        &'a self,
        op: &'a Operation,
        key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Receipt, ProviderError>> {
        Box::pin(async move { Ok(self.send(op, key).await?) })
    }

    fn lookup<'a>(
        &'a self,
        op: &'a Operation,
        key: &'a IdempotencyKey,
        ctx: &'a LookupContext<'a>,
    ) -> BoxFuture<'a, Result<Lookup, ProviderError>> {
        Box::pin(async move { Ok(self.look_up(op, key, ctx).await?) })
    }

    fn held_agents(&self) -> Option<&dyn HeldAgents> {
        Some(self)
    }

    /// `POST /faucet/claim {agent_casino_id}`: the faucet takes no idempotency key.
    fn claim_faucet<'a>(
        &'a self,
        agent_id: &'a str,
        _key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<FaucetAnswer, ProviderError>> {
        Box::pin(async move { Ok(self.claim(agent_id).await?) })
    }

    fn mark_complete<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move { Ok(self.complete(escrow_id).await?) })
    }

    /// The casino answers a balance only to the agent's own key: `None` for an agent pfsync holds none of.
    fn wallet_now<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProviderError>> {
        Box::pin(async move {
            let Some(b) = self.balance_of(agent_id).await? else { return Ok(None) };
            let lifetime = b.lifetime.unwrap_or_default();
            let usd = |m: Option<Micros>| m.map(|m| m.to_string());
            Ok(Some(serde_json::json!({
                "agent_id": b.agent_id,
                "balance_usd": b.balance_usd.to_string(),
                "total_deposited_usd": usd(lifetime.total_deposited),
                "total_withdrawn_usd": usd(lifetime.total_withdrawn),
            })))
        })
    }

    fn escrow_now<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<serde_json::Value, ProviderError>> {
        Box::pin(async move {
            let e = self.escrow(escrow_id).await?;
            Ok(serde_json::json!({
                "escrow_id": e.escrow_id, "status": e.status, "amount_usd": e.amount_usd.to_string(),
                "commission_usd": e.commission_usd.to_string(), "net_to_counterparty": e.net_to_counterparty.to_string(),
                "description": e.description, "buyer_agent_id": e.creator_id, "seller_agent_id": e.counterparty_id,
                "created_at": e.created_at, "auto_release_at": e.auto_release_at, "completed_at": e.completed_at,
                "released_at": e.released_at, "disputed_at": e.disputed_at
            }))
        })
    }
}

impl HeldAgents for LiveProvider {
    fn agent_ids(&self) -> Vec<String> {
        self.ring.agents().map(|a| a.agent_id.clone()).collect()
    }

    fn payer_id(&self) -> &str {
        &self.ring.payer().agent_id
    }

    fn ledger_window(&self) -> usize {
        evidence::LEDGER_WINDOW
    }

    fn escrow_ids(&self) -> &[String] {
        &self.escrow_ids
    }

    /// `GET /auth/balance` and `GET /auth/referral/code`, with the agent's own key.
    fn wallet<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<AgentWallet, ProviderError>> {
        Box::pin(async move {
            let agent = self.held(agent_id, "wallet owner")?;
            let balance: Balance = agent.casino.get_json(&["auth", "balance"]).await.map_err(LiveError::from_http)?;
            let code: ReferralCode =
                agent.casino.get_json(&["auth", "referral", "code"]).await.map_err(LiveError::from_http)?;
            let lifetime = balance.lifetime.unwrap_or_default();
            Ok(AgentWallet {
                agent_id: balance.agent_id,
                balance: balance.balance_usd,
                referral_code: Some(code.referral_code),
                total_deposited: lifetime.total_deposited,
                total_withdrawn: lifetime.total_withdrawn,
            })
        })
    }

    fn ledger<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Vec<LedgerEntry>, ProviderError>> {
        Box::pin(async move {
            let agent = self.held(agent_id, "ledger owner")?;
            Ok(self.ledger_of(agent).await?)
        })
    }

    fn escrow<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<EscrowRecord, ProviderError>> {
        Box::pin(async move { Ok(LiveProvider::escrow(self, escrow_id).await?) })
    }
}
