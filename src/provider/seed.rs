//! The seed's API (`../shared/api/purpleflea-api.md`, what `pfsync sandbox` serves): payouts and escrow
//! through one key, idempotency keys, lookups by key and list endpoints, as its contract declares. A
//! deployment of it that does not keep keys is declared with `[provider] honours_idempotency_keys = false`.

use super::{
    AgentActions, Capabilities, Evidence, FaucetAnswer, FaucetClaim, Lookup, LookupContext, Provider, Receipt,
};
use crate::api::{
    ApiError, Client, EscrowActionRequest, EscrowCreateRequest, IdempotencyKey, ListQuery, Page, PayoutRequest,
    Transaction, TxKind,
};
use crate::payouts::operation::{Action, EscrowRef, Operation};

/// How many rows a lookup asks for: one is expected, more are evidence of duplicates or of a provider
/// that ignored the filter.
const LOOKUP_LIMIT: u32 = 10;

pub struct SeedProvider {
    client: Client,
    caps: Capabilities,
}

impl SeedProvider {
    /// `honours_keys` is what the deployment declares; the contract says it does. Lookup by key rests on
    /// the same memory (transactions carry the key the provider kept), so it goes with it.
    pub fn new(client: Client, honours_keys: bool) -> SeedProvider {
        let caps = Capabilities {
            honours_idempotency_keys: honours_keys,
            lookup_by_key: honours_keys,
            list_endpoints: true,
            escrow_fee: false,
            ledger_evidence: false,
            // The contract: "once per agent, later claims 409 invalid_state".
            faucet_once_per_agent: true,
            // The contract's escrows go funded -> released | refunded: there is no complete endpoint.
            escrow_completion: false,
        };
        SeedProvider { client, caps }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Provider for SeedProvider {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn execute(&self, op: &Operation, key: &IdempotencyKey) -> Result<Receipt, ApiError> {
        let c = &self.client;
        let key = Some(key);
        let action = || EscrowActionRequest { reason: op.reason.clone(), extra: Default::default() };
        // The executor binds releases to their create's escrow before sending; an unbound one reaching here
        // is a bug, reported as such (an unknown outcome, never a rejection that would retire the id).
        let unbound =
            || ApiError::BadSetting(format!("operation {} was sent before its create's escrow was known", op.id));
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

    async fn lookup(&self, op: &Operation, key: &IdempotencyKey, _ctx: &LookupContext<'_>) -> Result<Lookup, ApiError> {
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
        Ok(judge(op, key, &page))
    }
}

impl AgentActions for SeedProvider {
    /// `POST faucet /claim` under the claim's key. The contract credits an agent once and answers any later
    /// claim 409 `invalid_state`; a key the provider keeps replays a repeat's first answer. After a 409,
    /// a provider that keeps keys is asked whether the credit it refers to was this claim's (a first send
    /// whose answer was lost): then that is the answer, else the agent claimed before.
    async fn claim_faucet(&self, agent_id: &str, key: &IdempotencyKey) -> Result<FaucetAnswer, ApiError> {
        let message = match self.client.faucet_claim(agent_id, Some(key)).await {
            Ok(sent) => {
                return Ok(FaucetAnswer::Credited(FaucetClaim {
                    agent_id: sent.answer.agent_id,
                    amount: crate::micros::Micros::from_usd(sent.answer.amount_usd),
                    claim_id: Some(sent.answer.tx_id),
                    replayed: sent.replayed,
                }));
            }
            Err(ApiError::InvalidState { message }) => message,
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

/// The transaction kind an operation makes at this provider.
fn tx_kind(op: &Operation) -> TxKind {
    match op.action {
        Action::Payout { .. } => TxKind::Payout,
        Action::EscrowCreate { .. } => TxKind::EscrowLock,
        Action::Release { .. } => TxKind::EscrowRelease,
        Action::Dispute { .. } => TxKind::EscrowRefund,
    }
}

/// Does this transaction belong to this operation? Key, kind, and everything the operation fixes: the
/// payee and amount of a payout, buyer, seller and amount of a create, the escrow of a release or dispute.
fn belongs(op: &Operation, key: &IdempotencyKey, tx: &Transaction) -> Result<(), String> {
    if tx.idempotency_key.as_deref() != Some(key.as_str()) {
        return Err(format!("transaction {} carries key {:?}, not this operation's", tx.tx_id, tx.idempotency_key));
    }
    if tx.kind != tx_kind(op) {
        return Err(format!("transaction {} is a {}, not a {}", tx.tx_id, tx.kind.as_str(), tx_kind(op).as_str()));
    }
    let mismatch = |what: &str| Err(format!("transaction {} has another {what} than the operation", tx.tx_id));
    match &op.action {
        Action::Payout { agent, amount } => {
            if tx.agent_id != *agent {
                return mismatch("agent");
            }
            if tx.amount_usd != *amount {
                return mismatch("amount");
            }
        }
        Action::EscrowCreate { buyer, seller, amount, .. } => {
            if tx.agent_id != *buyer || tx.counterparty_agent_id.as_deref() != Some(seller.as_str()) {
                return mismatch("buyer or seller");
            }
            if tx.amount_usd != *amount {
                return mismatch("amount");
            }
        }
        Action::Release { escrow } | Action::Dispute { escrow } => match escrow {
            EscrowRef::Id(id) if tx.reference.as_deref() == Some(id.as_str()) => {}
            _ => return mismatch("escrow"),
        },
    }
    Ok(())
}

/// Judge a lookup page. "Never executed" needs a successful answer with zero rows and no further page;
/// any row that cannot be read or belongs to another operation makes the answer inconclusive unless a row
/// that does belong proves the operation ran.
pub fn judge(op: &Operation, key: &IdempotencyKey, page: &Page<Transaction>) -> Lookup {
    if page.rows.is_empty() {
        return match &page.next_cursor {
            None => Lookup::NotExecuted,
            Some(_) => Lookup::Inconclusive { why: "the provider returned no rows but a next page".into() },
        };
    }
    let mut matching: Vec<&Transaction> = Vec::new();
    let mut doubts: Vec<String> = Vec::new();
    for row in &page.rows {
        match row {
            Ok(tx) => match belongs(op, key, tx) {
                Ok(()) => matching.push(tx),
                Err(why) => doubts.push(why),
            },
            Err(e) => doubts.push(format!("a transaction could not be read ({}: {})", e.id, e.reason)),
        }
    }
    match matching.split_first() {
        // Money moved under this key: that is the outcome, whatever else the page held.
        Some((first, rest)) => {
            if !doubts.is_empty() {
                tracing::warn!(id = %op.id, doubts = doubts.len(), "lookup page also held rows of no use: {}", doubts[0]);
            }
            let escrow_id = match op.action {
                Action::EscrowCreate { .. } => first.reference.clone(),
                _ => op.escrow_id().map(str::to_string),
            };
            Lookup::Executed {
                tx_id: Some(first.tx_id.clone()),
                escrow_id,
                duplicates: rest.len(),
                evidence: Evidence::Key,
            }
        }
        None => Lookup::Inconclusive { why: doubts.join("; ") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RowError;
    use crate::money::Usd;

    fn payout() -> (Operation, IdempotencyKey) {
        let op = Operation {
            id: "p-1".into(),
            action: Action::Payout { agent: "agent-1".into(), amount: Usd::from_cents(500).unwrap() },
            reason: "r".into(),
            requested_at: None,
        };
        let key = op.idempotency_key("t").unwrap();
        (op, key)
    }

    fn tx(id: &str, key: &str, agent: &str, cents: i64) -> Transaction {
        Transaction {
            tx_id: id.into(),
            kind: TxKind::Payout,
            agent_id: agent.into(),
            counterparty_agent_id: None,
            amount_usd: Usd::from_cents(cents).unwrap(),
            idempotency_key: Some(key.into()),
            reference: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn page(rows: Vec<Result<Transaction, RowError>>) -> Page<Transaction> {
        Page { rows, next_cursor: None, unknown_fields: Vec::new() }
    }

    #[test]
    fn only_an_empty_successful_answer_means_never_executed() {
        let (op, key) = payout();
        let k = key.as_str();
        assert_eq!(judge(&op, &key, &page(vec![])), Lookup::NotExecuted);
        let garbled = Err(RowError { entity: "transaction", id: "tx_1".into(), reason: "amount_usd: invalid".into() });
        assert!(matches!(judge(&op, &key, &page(vec![garbled])), Lookup::Inconclusive { .. }));
        // A provider that ignored the filter: rows of other operations prove nothing.
        let other = Ok(tx("tx_2", "other-key", "agent-1", 500));
        assert!(matches!(judge(&op, &key, &page(vec![other])), Lookup::Inconclusive { .. }));
        // The right key on a row with another payee or amount is not this operation's outcome either.
        for wrong in [tx("tx_3", k, "agent-2", 500), tx("tx_4", k, "agent-1", 501)] {
            assert!(matches!(judge(&op, &key, &page(vec![Ok(wrong)])), Lookup::Inconclusive { .. }));
        }
        let mut more = page(vec![]);
        more.next_cursor = Some("c".into());
        assert!(matches!(judge(&op, &key, &more), Lookup::Inconclusive { .. }));
    }

    #[test]
    fn a_matching_row_is_the_outcome_and_extra_matches_are_duplicates() {
        let (op, key) = payout();
        let k = key.as_str();
        let found = judge(&op, &key, &page(vec![Ok(tx("tx_1", k, "agent-1", 500))]));
        assert_eq!(
            found,
            Lookup::Executed { tx_id: Some("tx_1".into()), escrow_id: None, duplicates: 0, evidence: Evidence::Key }
        );
        let rows = vec![
            Ok(tx("tx_0", "other", "agent-9", 1)),
            Ok(tx("tx_1", k, "agent-1", 500)),
            Ok(tx("tx_2", k, "agent-1", 500)),
        ];
        assert_eq!(
            judge(&op, &key, &page(rows)),
            Lookup::Executed { tx_id: Some("tx_1".into()), escrow_id: None, duplicates: 1, evidence: Evidence::Key }
        );
    }
}
