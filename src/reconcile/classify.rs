//! The classification rules of `sql/reconcile/classified.sql` and `unclaimed_transactions.sql`, as Rust, for
//! the runs that classify only what changed. The SQL stays the reference (a full rebuild runs it); the
//! property test in tests/it/reconcile_incremental.rs holds the two equal, row for row. Pure.

use chrono::{DateTime, Utc};

use super::findings::Class;
use super::state::{Operation, Unclaimed};
use crate::payouts::state::StatusName;

/// The `CASE` of `classified.sql`, in its order: the first rule that holds gives the class.
pub fn classify(op: &Operation, stale_before: DateTime<Utc>) -> Class {
    let n = op.found.n();
    let not_final = matches!(op.status, StatusName::Unknown | StatusName::InFlight);
    if op.status == StatusName::Completed && n == 0 {
        return Class::MissingAtProvider;
    }
    if n > 1 {
        return Class::DuplicateAtProvider;
    }
    // Refused, or a person decided it is not to be paid: nothing was to move.
    if matches!(op.status, StatusName::Rejected | StatusName::Abandoned) {
        return if n >= 1 { Class::StatusMismatch } else { Class::Matched };
    }
    // A person found the latest attempt never ran: the next payouts run sends it.
    if op.status == StatusName::NeverRan {
        return Class::InProgress;
    }
    if not_final {
        return if op.last_recorded_at < stale_before { Class::StaleUnknown } else { Class::InProgress };
    }
    // SQL's `a <> b` is true only when both sides are there.
    if let (Some(logged), Some(provider)) = (op.amount, op.found.amount())
        && logged != provider
    {
        return Class::AmountMismatch;
    }
    if let (Some(logged), Some(provider)) = (op.agent_id.as_deref(), op.found.agent_id())
        && logged != provider
    {
        return Class::AgentMismatch;
    }
    Class::Matched
}

/// A transaction no operation claims: a keyless payout that repeats a completed logged payout, or one whose
/// key is of this namespace; otherwise no finding.
pub fn classify_unclaimed(u: &Unclaimed, key_prefix: &str) -> Option<Class> {
    if u.repeats.is_some() {
        return Some(Class::UnattributedPayout);
    }
    match &u.tx.key {
        Some(key) if key.starts_with(key_prefix) => Some(Class::UnloggedAtProvider),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate, TimeZone};

    use super::*;
    use crate::money::Usd;
    use crate::operation::OpKind;
    use crate::reconcile::state::{Found, KeyMatch};

    fn op(status: StatusName, found: Found, amount: &str, agent: &str, at: DateTime<Utc>) -> Operation {
        Operation {
            operation_id: "p".into(),
            kind: OpKind::Payout,
            status,
            attempts: 1,
            agent_id: Some(agent.into()),
            amount: Some(Usd::parse(amount).unwrap()),
            reason: None,
            key: "pfsync:default:payout:p".into(),
            log_tx_id: None,
            first_recorded_at: at,
            last_recorded_at: at,
            found,
            class: Class::Matched,
        }
    }

    fn by_key(n: i64, amount: &str, agent: &str) -> Found {
        Found::ByKey(KeyMatch {
            n,
            tx_ids: (0..n).map(|i| format!("tx_{i}")).collect(),
            agent_id: agent.into(),
            amount: Usd::parse(amount).unwrap(),
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        })
    }

    #[test]
    fn the_rules_apply_in_the_order_of_the_sql_case() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let stale = t + Duration::minutes(1);
        let fresh = t - Duration::minutes(1);
        use StatusName::*;
        let cases = [
            (op(Completed, Found::None, "1.00", "a", t), fresh, Class::MissingAtProvider),
            (op(Completed, by_key(2, "1.00", "a"), "1.00", "a", t), fresh, Class::DuplicateAtProvider),
            // A duplicate wins over a rejection and over an operation still running.
            (op(Rejected, by_key(2, "1.00", "a"), "1.00", "a", t), fresh, Class::DuplicateAtProvider),
            (op(Unknown, by_key(2, "1.00", "a"), "1.00", "a", t), fresh, Class::DuplicateAtProvider),
            (op(Rejected, by_key(1, "1.00", "a"), "1.00", "a", t), fresh, Class::StatusMismatch),
            (op(Rejected, Found::None, "1.00", "a", t), fresh, Class::Matched),
            (op(Unknown, Found::None, "1.00", "a", t), stale, Class::StaleUnknown),
            (op(InFlight, by_key(1, "9.00", "b"), "1.00", "a", t), fresh, Class::InProgress),
            (op(Completed, by_key(1, "9.00", "b"), "1.00", "a", t), fresh, Class::AmountMismatch),
            (op(Completed, by_key(1, "1.00", "b"), "1.00", "a", t), fresh, Class::AgentMismatch),
            (op(Completed, by_key(1, "1.00", "a"), "1.00", "a", t), fresh, Class::Matched),
        ];
        for (op, stale_before, want) in cases {
            assert_eq!(classify(&op, stale_before), want, "{op:?}");
        }
        // An escrow action may log no amount or agent: nothing to compare, so it matches.
        let bare = Operation { amount: None, agent_id: None, ..op(Completed, by_key(1, "9.00", "b"), "1.00", "a", t) };
        assert_eq!(classify(&bare, fresh), Class::Matched);
    }
}
