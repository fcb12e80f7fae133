//! The operations pfsync executes: payouts and escrow actions, validated and typed so that each kind
//! carries exactly the fields it needs, with the one function that derives their idempotency keys.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::http::IdempotencyKey;
use crate::money::Usd;

/// The kind of an operation, as the log, the rejects table and the status view spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Payout,
    EscrowCreate,
    EscrowRelease,
    EscrowDispute,
}

impl crate::tables::row::Text for OpKind {
    const WHAT: &'static str = "an operation kind (payout, escrow_create, escrow_release, escrow_dispute)";
    fn as_str(self) -> &'static str {
        OpKind::as_str(self)
    }
    fn parse(s: &str) -> Option<OpKind> {
        OpKind::parse(s)
    }
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [OpKind::Payout, OpKind::EscrowCreate, OpKind::EscrowRelease, OpKind::EscrowDispute];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Payout => "payout",
            OpKind::EscrowCreate => "escrow_create",
            OpKind::EscrowRelease => "escrow_release",
            OpKind::EscrowDispute => "escrow_dispute",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Does this kind move money out of the platform or a buyer (what the safety brake counts)?
    pub fn is_outflow(self) -> bool {
        matches!(self, OpKind::Payout | OpKind::EscrowCreate)
    }
}

/// Which escrow a release or dispute acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EscrowRef {
    Id(String),
    /// The escrow that this create action made (known from the log once the create completed).
    CreatedBy(String),
}

/// What an operation does, with exactly the fields that kind needs: nothing to default at send time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Payout { agent: String, amount: Usd },
    EscrowCreate { buyer: String, seller: String, amount: Usd, description: String, metadata: Option<Value> },
    Release { escrow: EscrowRef },
    Dispute { escrow: EscrowRef },
}

/// A validated operation: everything needed to send it, nothing left to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: String,
    pub action: Action,
    /// Why the money moves; required for every kind, kept in the log for auditors.
    pub reason: String,
    pub requested_at: Option<DateTime<Utc>>,
}

/// What must stay the same when an operation id is seen again (in the same batch or in the log).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub kind: OpKind,
    pub agent_id: Option<String>,
    pub counterparty: Option<String>,
    pub amount: Option<Usd>,
    pub reason: String,
}

impl Operation {
    pub fn kind(&self) -> OpKind {
        match self.action {
            Action::Payout { .. } => OpKind::Payout,
            Action::EscrowCreate { .. } => OpKind::EscrowCreate,
            Action::Release { .. } => OpKind::EscrowRelease,
            Action::Dispute { .. } => OpKind::EscrowDispute,
        }
    }

    /// Payee of a payout, buyer of an escrow create.
    pub fn agent_id(&self) -> Option<&str> {
        match &self.action {
            Action::Payout { agent, .. } => Some(agent),
            Action::EscrowCreate { buyer, .. } => Some(buyer),
            Action::Release { .. } | Action::Dispute { .. } => None,
        }
    }

    /// Seller of an escrow create.
    pub fn counterparty(&self) -> Option<&str> {
        match &self.action {
            Action::EscrowCreate { seller, .. } => Some(seller),
            _ => None,
        }
    }

    pub fn amount(&self) -> Option<Usd> {
        match &self.action {
            Action::Payout { amount, .. } | Action::EscrowCreate { amount, .. } => Some(*amount),
            Action::Release { .. } | Action::Dispute { .. } => None,
        }
    }

    pub fn escrow(&self) -> Option<&EscrowRef> {
        match &self.action {
            Action::Release { escrow } | Action::Dispute { escrow } => Some(escrow),
            _ => None,
        }
    }

    /// The escrow id a release or dispute names directly (not through its create).
    pub fn escrow_id(&self) -> Option<&str> {
        match self.escrow() {
            Some(EscrowRef::Id(e)) => Some(e),
            _ => None,
        }
    }

    /// Point a release or dispute that names its create at the escrow that create made.
    pub fn bind_escrow(&mut self, escrow_id: &str) {
        if let Action::Release { escrow } | Action::Dispute { escrow } = &mut self.action {
            *escrow = EscrowRef::Id(escrow_id.to_string());
        }
    }

    /// The idempotency key of this operation: from the namespace, the kind and the id, nothing else (not
    /// the time, not a random value), so every attempt by every run sends the same key. Ids were
    /// validated to the key alphabet, so this cannot fail for a validated operation.
    pub fn idempotency_key(&self, namespace: &str) -> Result<IdempotencyKey, String> {
        IdempotencyKey::derive(namespace, self.kind().as_str(), &self.id)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            kind: self.kind(),
            agent_id: self.agent_id().map(str::to_string),
            counterparty: self.counterparty().map(str::to_string),
            amount: self.amount(),
            reason: self.reason.clone(),
        }
    }

    /// Money this operation moves out of the platform or a buyer (counted by the safety brake).
    pub fn outflow(&self) -> Usd {
        if self.kind().is_outflow() { self.amount().unwrap_or(Usd::ZERO) } else { Usd::ZERO }
    }
}

/// Shard `index` of `count` (`--shard I/N`): operations whose id hashes to `index`, for parallel tasks.
/// Built only through [`Shard::new`] (or the CLI's parser), so `index < count` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (count > 0 && index < count).then_some(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    pub fn contains(self, id: &str) -> bool {
        crate::rng::hash_bytes(0, id.as_bytes()) % self.count as u64 == self.index as u64
    }
}

pub fn in_shard(id: &str, shard: Option<Shard>) -> bool {
    shard.is_none_or(|s| s.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_only_on_namespace_kind_and_id() {
        let mut op = Operation {
            id: "p-1".into(),
            action: Action::Payout { agent: "a".into(), amount: Usd::from_cents(100).unwrap() },
            reason: "r".into(),
            requested_at: Some(Utc::now()),
        };
        let k1 = op.idempotency_key("prod").unwrap();
        op.requested_at = None;
        op.reason = "other".into();
        assert_eq!(op.idempotency_key("prod").unwrap(), k1);
        assert_ne!(op.idempotency_key("staging").unwrap(), k1);
        for k in OpKind::ALL {
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn a_release_binds_to_the_escrow_its_create_made() {
        let mut op = Operation {
            id: "r-1".into(),
            action: Action::Release { escrow: EscrowRef::CreatedBy("c-1".into()) },
            reason: "done".into(),
            requested_at: None,
        };
        assert_eq!(op.escrow_id(), None);
        op.bind_escrow("esc_1");
        assert_eq!(op.escrow_id(), Some("esc_1"));
        assert_eq!(op.outflow(), Usd::ZERO);
    }
}
