//! The operations pfsync executes: payouts and escrow actions, validated, with the one function that
//! derives their idempotency keys.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::api::IdempotencyKey;
use crate::money::Usd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Payout,
    EscrowCreate,
    EscrowRelease,
    EscrowDispute,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Payout => "payout",
            OpKind::EscrowCreate => "escrow_create",
            OpKind::EscrowRelease => "escrow_release",
            OpKind::EscrowDispute => "escrow_dispute",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        Some(match s {
            "payout" => OpKind::Payout,
            "escrow_create" => OpKind::EscrowCreate,
            "escrow_release" => OpKind::EscrowRelease,
            "escrow_dispute" => OpKind::EscrowDispute,
            _ => return None,
        })
    }
}

/// Which escrow a release or dispute acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EscrowRef {
    Id(String),
    /// The escrow that this create action made (known from the log once the create completed).
    CreatedBy(String),
}

/// A validated operation: everything needed to send it, nothing left to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: String,
    pub kind: OpKind,
    /// Payee of a payout, buyer of an escrow create.
    pub agent_id: Option<String>,
    /// Seller of an escrow create.
    pub counterparty: Option<String>,
    pub amount: Option<Usd>,
    pub reason: String,
    pub escrow: Option<EscrowRef>,
    pub description: Option<String>,
    pub metadata: Option<Value>,
    pub requested_at: Option<DateTime<Utc>>,
}

/// What must stay the same when an operation id is seen again (in the same batch or in the log).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub kind: &'static str,
    pub agent_id: Option<String>,
    pub counterparty: Option<String>,
    pub amount: Option<Usd>,
    pub reason: String,
}

impl Operation {
    /// The idempotency key of this operation: from the namespace, the kind and the id, nothing else (not
    /// the time, not a random value), so every attempt by every run sends the same key. Ids were
    /// validated to the key alphabet, so this cannot fail for a validated operation.
    pub fn idempotency_key(&self, namespace: &str) -> Result<IdempotencyKey, String> {
        IdempotencyKey::derive(namespace, self.kind.as_str(), &self.id)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            kind: self.kind.as_str(),
            agent_id: self.agent_id.clone(),
            counterparty: self.counterparty.clone(),
            amount: self.amount,
            reason: self.reason.clone(),
        }
    }

    /// Money this operation moves out of the platform or a buyer (counted by the safety brake).
    pub fn outflow(&self) -> Usd {
        match self.kind {
            OpKind::Payout | OpKind::EscrowCreate => self.amount.unwrap_or(Usd::ZERO),
            OpKind::EscrowRelease | OpKind::EscrowDispute => Usd::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_only_on_namespace_kind_and_id() {
        let mut op = Operation {
            id: "p-1".into(),
            kind: OpKind::Payout,
            agent_id: Some("a".into()),
            counterparty: None,
            amount: Some(Usd::from_cents(100).unwrap()),
            reason: "r".into(),
            escrow: None,
            description: None,
            metadata: None,
            requested_at: Some(Utc::now()),
        };
        let k1 = op.idempotency_key("prod").unwrap();
        op.requested_at = None;
        op.reason = "other".into();
        assert_eq!(op.idempotency_key("prod").unwrap(), k1);
        assert_ne!(op.idempotency_key("staging").unwrap(), k1);
        for k in [OpKind::Payout, OpKind::EscrowCreate, OpKind::EscrowRelease, OpKind::EscrowDispute] {
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
        }
    }
}
