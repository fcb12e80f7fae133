//! Findings: their classes, and how one run's findings carry the first-seen time of the same finding in
//! the run before, or mark a finding that disappeared as resolved. Pure.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::money::Usd;
use crate::tables::RECONCILIATION;
use crate::tables::row::{Text, table_row};

/// Every class an operation or provider transaction can end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Matched,
    /// An operation still running, younger than the stale threshold: not a finding.
    InProgress,
    AmountMismatch,
    AgentMismatch,
    MissingAtProvider,
    UnloggedAtProvider,
    DuplicateAtProvider,
    StatusMismatch,
    StaleUnknown,
    UnattributedPayout,
    BalanceMismatch,
    /// Live provider: entries of a held agent's ledger that no sync could read (more than the provider's
    /// window of 50 written between two syncs), or a broken balance chain in the synced copy.
    LedgerGap,
    /// One provider transaction claimed by two or more logged operations: at most one of them was paid by
    /// it (live provider; on the seed a transaction is found by its operation's own key).
    ClaimedTwice,
}

pub const FINDING_CLASSES: &[Class] = &[
    Class::AmountMismatch,
    Class::AgentMismatch,
    Class::MissingAtProvider,
    Class::UnloggedAtProvider,
    Class::DuplicateAtProvider,
    Class::StatusMismatch,
    Class::StaleUnknown,
    Class::UnattributedPayout,
    Class::BalanceMismatch,
    Class::LedgerGap,
    Class::ClaimedTwice,
];

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Matched => "matched",
            Class::InProgress => "in_progress",
            Class::AmountMismatch => "amount_mismatch",
            Class::AgentMismatch => "agent_mismatch",
            Class::MissingAtProvider => "missing_at_provider",
            Class::UnloggedAtProvider => "unlogged_at_provider",
            Class::DuplicateAtProvider => "duplicate_at_provider",
            Class::StatusMismatch => "status_mismatch",
            Class::StaleUnknown => "stale_unknown",
            Class::UnattributedPayout => "unattributed_payout",
            Class::BalanceMismatch => "balance_mismatch",
            Class::LedgerGap => "ledger_gap",
            Class::ClaimedTwice => "claimed_twice",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        [Class::Matched, Class::InProgress].iter().chain(FINDING_CLASSES).copied().find(|c| c.as_str() == s)
    }

    pub fn is_finding(self) -> bool {
        !matches!(self, Class::Matched | Class::InProgress)
    }
}

impl Text for Class {
    const WHAT: &'static str = "a reconciliation class";
    fn as_str(self) -> &'static str {
        Class::as_str(self)
    }
    fn parse(s: &str) -> Option<Class> {
        Class::parse(s)
    }
}

/// One finding of this run. Its class is always known: the rules give one, and a stored row whose class
/// no rule gives is refused when read back (`rows.rs`), never recorded as "unknown".
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub class: Class,
    pub operation_id: Option<String>,
    pub kind: Option<String>,
    pub idempotency_key: Option<String>,
    pub tx_ids: Option<String>,
    pub agent_id: Option<String>,
    pub expected_agent: Option<String>,
    pub actual_agent: Option<String>,
    pub expected_amount: Option<Usd>,
    pub actual_amount: Option<Usd>,
    pub detail: String,
}

impl Finding {
    /// A finding of `class`, about nothing yet: the caller fills in what it concerns.
    pub fn new(class: Class, detail: String) -> Finding {
        Finding {
            class,
            operation_id: None,
            kind: None,
            idempotency_key: None,
            tx_ids: None,
            agent_id: None,
            expected_agent: None,
            actual_agent: None,
            expected_amount: None,
            actual_amount: None,
            detail,
        }
    }

    /// Identity across runs: the class and what it is about.
    pub fn key(&self) -> String {
        let subject =
            self.operation_id.as_deref().or(self.tx_ids.as_deref()).or(self.agent_id.as_deref()).unwrap_or("-");
        format!("{}:{subject}", self.class.as_str())
    }
}

/// A row for the reconciliation table.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    pub finding: Finding,
    pub key: String,
    pub first_seen_run: String,
    pub first_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

table_row! {
    /// One row of the reconciliation table: a finding as one run recorded it.
    pub struct ReconciliationRow: RECONCILIATION, key(finding_key) {
        pub run_id: String,
        pub finding_key: String,
        pub class: Class,
        pub operation_id: Option<String>,
        pub kind: Option<String>,
        pub idempotency_key: Option<String>,
        pub tx_ids: Option<String>,
        pub agent_id: Option<String>,
        pub expected_agent_id: Option<String>,
        pub actual_agent_id: Option<String>,
        pub expected_amount_usd: Option<Usd>,
        pub actual_amount_usd: Option<Usd>,
        pub detail: String,
        pub first_seen_run: String,
        pub first_seen_at: DateTime<Utc>,
        pub resolved_at: Option<DateTime<Utc>>,
        pub recorded_at: DateTime<Utc>,
    }
}

impl FindingRow {
    /// The table row this run writes for it.
    pub fn to_row(&self, run_id: &str, recorded_at: DateTime<Utc>) -> ReconciliationRow {
        let f = &self.finding;
        ReconciliationRow {
            run_id: run_id.to_string(),
            finding_key: self.key.clone(),
            class: f.class,
            operation_id: f.operation_id.clone(),
            kind: f.kind.clone(),
            idempotency_key: f.idempotency_key.clone(),
            tx_ids: f.tx_ids.clone(),
            agent_id: f.agent_id.clone(),
            expected_agent_id: f.expected_agent.clone(),
            actual_agent_id: f.actual_agent.clone(),
            expected_amount_usd: f.expected_amount,
            actual_amount_usd: f.actual_amount,
            detail: f.detail.clone(),
            first_seen_run: self.first_seen_run.clone(),
            first_seen_at: self.first_seen_at,
            resolved_at: self.resolved_at,
            recorded_at,
        }
    }
}

impl From<ReconciliationRow> for FindingRow {
    fn from(r: ReconciliationRow) -> FindingRow {
        FindingRow {
            finding: Finding {
                class: r.class,
                operation_id: r.operation_id,
                kind: r.kind,
                idempotency_key: r.idempotency_key,
                tx_ids: r.tx_ids,
                agent_id: r.agent_id,
                expected_agent: r.expected_agent_id,
                actual_agent: r.actual_agent_id,
                expected_amount: r.expected_amount_usd,
                actual_amount: r.actual_amount_usd,
                detail: r.detail,
            },
            key: r.finding_key,
            first_seen_run: r.first_seen_run,
            first_seen_at: r.first_seen_at,
            resolved_at: r.resolved_at,
        }
    }
}

/// This run's rows: every current finding (with its first sighting carried from the previous run's open
/// row of the same key), and a resolution row for every previously open finding that is gone.
pub fn carry_forward(
    previous_open: &[FindingRow],
    current: Vec<Finding>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Vec<FindingRow> {
    let prev: HashMap<&str, &FindingRow> = previous_open.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut seen: BTreeMap<String, FindingRow> = BTreeMap::new();
    for f in current {
        let key = f.key();
        let (first_run, first_at) = match prev.get(key.as_str()) {
            Some(p) => (p.first_seen_run.clone(), p.first_seen_at),
            None => (run_id.to_string(), now),
        };
        seen.entry(key.clone()).or_insert(FindingRow {
            finding: f,
            key,
            first_seen_run: first_run,
            first_seen_at: first_at,
            resolved_at: None,
        });
    }
    // Resolutions in key order, like the current rows: `previous_open` comes in the order its table's files
    // are read, which depends on how earlier runs wrote them; the report's order must not.
    let mut resolved: Vec<FindingRow> = previous_open
        .iter()
        .filter(|p| !seen.contains_key(&p.key))
        .map(|p| FindingRow { resolved_at: Some(now), ..p.clone() })
        .collect();
    resolved.sort_by(|a, b| a.key.cmp(&b.key));
    resolved.dedup_by(|a, b| a.key == b.key);
    let mut rows: Vec<FindingRow> = seen.into_values().collect();
    rows.extend(resolved);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(class: Class, op: &str) -> Finding {
        Finding { operation_id: Some(op.into()), ..Finding::new(class, "d".into()) }
    }

    #[test]
    fn first_seen_is_carried_and_gone_findings_are_resolved() {
        let t1 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let t2 = t1 + chrono::Duration::hours(1);
        let run1 = carry_forward(&[], vec![f(Class::AmountMismatch, "p1"), f(Class::StaleUnknown, "p2")], "r1", t1);
        assert_eq!(run1.len(), 2);
        let run2 = carry_forward(&run1, vec![f(Class::AmountMismatch, "p1"), f(Class::AgentMismatch, "p3")], "r2", t2);
        let by_key: HashMap<&str, &FindingRow> = run2.iter().map(|r| (r.key.as_str(), r)).collect();
        assert_eq!(by_key["amount_mismatch:p1"].first_seen_run, "r1");
        assert_eq!(by_key["amount_mismatch:p1"].first_seen_at, t1);
        assert_eq!(by_key["agent_mismatch:p3"].first_seen_run, "r2");
        assert_eq!(by_key["stale_unknown:p2"].resolved_at, Some(t2));
        assert_eq!(run2.len(), 3);
        // Resolutions come in key order whatever order the previous open rows were read in.
        let mut reversed = carry_forward(&[], vec![f(Class::StaleUnknown, "a"), f(Class::StaleUnknown, "b")], "r1", t1);
        reversed.reverse();
        let keys: Vec<String> = carry_forward(&reversed, vec![], "r2", t2).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["stale_unknown:a", "stale_unknown:b"]);
        for c in FINDING_CLASSES {
            assert_eq!(Class::parse(c.as_str()), Some(*c));
            assert!(c.is_finding());
        }
    }
}
