//! Resolving an unknown outcome by its idempotency key: pure judgement of the page a lookup answered,
//! tested without a network.

use crate::http::IdempotencyKey;
use crate::operation::{Action, EscrowRef, Operation};
use crate::provider::records::{Page, Transaction, TxKind};
use crate::provider::{Evidence, Lookup};

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
    fits(op, tx)
}

/// Does this transaction do what the operation does (kind, agents, amount, escrow), whatever key it carries?
fn fits(op: &Operation, tx: &Transaction) -> Result<(), String> {
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

/// A transaction that does what this operation does but carries no key, or another one: at a provider
/// declared to keep keys, the sign that it does not (its record of this operation's send, without the key).
/// While one exists after the intent, "no transaction carries the key" proves nothing.
pub fn unkeyed_twin<'a>(op: &Operation, key: &IdempotencyKey, txs: &'a [Transaction]) -> Option<&'a Transaction> {
    txs.iter().find(|t| t.idempotency_key.as_deref() != Some(key.as_str()) && fits(op, t).is_ok())
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
    use crate::money::Usd;
    use crate::provider::records::RowError;

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
