//! Resolving an unknown outcome from the payer's ledger: pure functions over what `GET /auth/ledger`
//! answered, tested without a network.
//!
//! The ledger is the key owner's last [`LEDGER_WINDOW`] entries, newest first by whole second. An
//! operation's debit is recognised by its reason (`payment_sent`, `escrow_lock: esc_…`) and amount,
//! written at or after the operation's intent (less a clock-skew allowance: the intent time is ours, the
//! entry's the provider's), and not claimed by another logged operation. The engine's batches never hold
//! two operations that would write the same debit (`plan::next_batch`), and two runs never send for one
//! payer at once (the lease, `engine.rs`), so one unclaimed candidate is this operation's outcome.

use std::collections::HashSet;

use crate::micros::Micros;
use crate::provider::records::LedgerEntry;
use crate::provider::{Evidence, Lookup, LookupContext};

/// How many entries `GET /auth/ledger` answers at most.
pub const LEDGER_WINDOW: usize = 50;

/// Where the search for an operation's debit starts, in the provider's unix seconds.
pub fn from_secs(ctx: &LookupContext<'_>, skew_secs: i64) -> Option<i64> {
    ctx.since.map(|t| t.timestamp() - skew_secs)
}

/// Does the window reach back to `from` (so that a debit after it, if any, is in it)?
pub fn covers(entries: &[LedgerEntry], from: i64) -> bool {
    entries.len() < LEDGER_WINDOW || entries.iter().any(|e| e.created_at < from)
}

/// The debits that may be this operation's: the reason and amount fit, at or after `from`, unclaimed.
pub fn candidates<'a>(
    entries: &'a [LedgerEntry],
    from: i64,
    amount: Micros,
    claimed: &HashSet<String>,
    reason: impl Fn(&LedgerEntry) -> bool,
    reference: impl Fn(&LedgerEntry) -> Option<String>,
) -> Vec<&'a LedgerEntry> {
    entries
        .iter()
        .filter(|e| e.is_debit() && e.amount == amount && e.created_at >= from && reason(e))
        .filter(|e| reference(e).is_none_or(|r| !claimed.contains(&r)))
        .collect()
}

/// One line per candidate, for the log and the reconcile report: what a person compares.
pub fn describe(c: &[&LedgerEntry]) -> String {
    c.iter()
        .map(|e| {
            format!(
                "{} {} {} at {} (balance after {})",
                e.reason,
                e.reference.as_deref().unwrap_or("-"),
                e.amount,
                e.created_at,
                e.balance_after
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// No candidate: "never ran" only when the window covers the time since the intent and a send of that
/// attempt can no longer be running; otherwise wait, or (window too short) leave it to a person.
pub fn absent(entries: &[LedgerEntry], from: i64, ctx: &LookupContext<'_>, what: &str) -> Lookup {
    if !covers(entries, from) {
        return Lookup::Inconclusive {
            why: format!(
                "no {what} in the payer's ledger, but its last {LEDGER_WINDOW} entries do not reach back to the intent: \
                 more entries were written since; check the provider's records"
            ),
        };
    }
    let settled = ctx.since.is_some_and(|t| ctx.now - t >= ctx.settle);
    if settled {
        Lookup::NotExecuted
    } else {
        Lookup::Pending {
            why: format!("no {what} in the payer's ledger yet, and the send may still be running at the provider"),
        }
    }
}

/// A payout (`POST /stats/pay`): a `payment_sent` debit of the amount; its reference (`pay_…`) is the tx id.
pub fn judge_payment(entries: &[LedgerEntry], amount: Micros, ctx: &LookupContext<'_>, skew_secs: i64) -> Lookup {
    let Some(from) = from_secs(ctx, skew_secs) else {
        return Lookup::Inconclusive {
            why: "the log has no time for the intent, so no ledger window can be chosen".into(),
        };
    };
    let found = candidates(entries, from, amount, ctx.claimed, |e| e.reason == "payment_sent", |e| e.reference.clone());
    match found.as_slice() {
        [] => absent(entries, from, ctx, &format!("payment_sent debit of {amount}")),
        [one] => Lookup::Executed {
            tx_id: one.reference.clone(),
            escrow_id: None,
            duplicates: 0,
            evidence: Evidence::Ledger,
        },
        many => Lookup::Inconclusive {
            why: format!(
                "{} unclaimed payment_sent debits of {amount} since the intent; which one (if any) is this payout's \
                 is for a person to decide: {}",
                many.len(),
                describe(many)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn entry(id: &str, reason: &str, cents: i64, created_at: i64) -> LedgerEntry {
        LedgerEntry {
            id: id.into(),
            agent_id: "ag_payer".into(),
            kind: "debit".into(),
            amount: Micros::from_raw(cents * 10_000).unwrap(),
            balance_after: Micros::ZERO,
            reason: reason.into(),
            reference: Some(format!("pay_{id}")),
            service: Some("payment".into()),
            created_at,
        }
    }

    #[test]
    fn one_unclaimed_debit_after_the_intent_is_the_outcome_and_anything_less_certain_is_not() {
        let claimed: HashSet<String> = ["pay_b".to_string()].into();
        let ctx = |now: i64| LookupContext {
            since: Some(at(1_000)),
            claimed: &claimed,
            last_error: None,
            now: at(now),
            settle: chrono::Duration::seconds(60),
            legacy_escrow_tag: false,
        };
        let amount = Micros::from_raw(12_340_000).unwrap();
        let old = entry("old", "payment_sent", 1234, 900);
        // The one candidate: after the intent, this amount, unclaimed.
        let e = vec![entry("a", "payment_sent", 1234, 1_001), entry("b", "payment_sent", 1234, 1_002), old.clone()];
        assert!(matches!(judge_payment(&e, amount, &ctx(2_000), 0),
            Lookup::Executed { tx_id: Some(ref t), .. } if t == "pay_a"));
        // Another amount, another reason, or before the intent: no candidate; settled and covered -> never ran.
        let e = vec![entry("c", "payment_sent", 1235, 1_001), entry("d", "withdrawal", 1234, 1_001), old.clone()];
        assert_eq!(judge_payment(&e, amount, &ctx(2_000), 0), Lookup::NotExecuted);
        // ... but not while the send may still be running.
        assert!(matches!(judge_payment(&e, amount, &ctx(1_010), 0), Lookup::Pending { .. }));
        // Two unclaimed candidates: a person decides.
        let e = vec![entry("a", "payment_sent", 1234, 1_001), entry("x", "payment_sent", 1234, 1_003)];
        assert!(matches!(judge_payment(&e, amount, &ctx(2_000), 0), Lookup::Inconclusive { .. }));
        // A full window that does not reach back to the intent proves nothing.
        let e: Vec<LedgerEntry> = (0..50).map(|i| entry(&format!("g{i}"), "bet", 100, 1_500)).collect();
        assert!(matches!(judge_payment(&e, amount, &ctx(2_000), 0), Lookup::Inconclusive { .. }));
        // The skew allowance reaches back before our own clock's intent time.
        let e = vec![entry("a", "payment_sent", 1234, 995), old];
        assert!(matches!(judge_payment(&e, amount, &ctx(2_000), 10), Lookup::Executed { .. }));
    }
}
