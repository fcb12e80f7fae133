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

/// The entries an operation is judged by, and whether they hold every entry written since the search began.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub entries: Vec<LedgerEntry>,
    /// Absence from `entries` proves absence from the ledger.
    pub covers: bool,
}

/// The entries to judge an operation by: the live window where it reaches back to `from`; otherwise the
/// window joined to pfsync's own gap-free copy of the ledger (`copied`, oldest first), when the copy
/// reaches back before `from` (or begins at the payer's very first entry, `copied_from_origin`: nothing
/// was written before it) and its newest entry is still in the window (so that nothing between the two went
/// unseen). Otherwise the live window, not covering: absence proves nothing.
pub fn reaching_back(live: &[LedgerEntry], copied: &[LedgerEntry], copied_from_origin: bool, from: i64) -> Reach {
    if covers(live, from) {
        return Reach { entries: live.to_vec(), covers: true };
    }
    let unjoined = || Reach { entries: live.to_vec(), covers: false };
    let Some(newest) = copied.last() else { return unjoined() };
    let joined = live.iter().any(|e| e.id == newest.id);
    let before = copied_from_origin || copied.iter().any(|e| e.created_at < from);
    if !(joined && before) {
        return unjoined();
    }
    let mut all: Vec<LedgerEntry> = copied.to_vec();
    let seen: HashSet<&str> = copied.iter().map(|e| e.id.as_str()).collect();
    all.extend(live.iter().filter(|e| !seen.contains(e.id.as_str())).cloned());
    Reach { entries: all, covers: true }
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
pub fn absent(covered: bool, ctx: &LookupContext<'_>, what: &str) -> Lookup {
    if !covered {
        return Lookup::Inconclusive {
            why: format!(
                "no {what} in the payer's ledger, but its last {LEDGER_WINDOW} entries do not reach back to the intent \
                 and pfsync's copy of the ledger has a gap since then: more entries were written than it read; \
                 compare with the provider's records (pfsync resolve)"
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
/// `payee`: the payee's own window where its key is held: a candidate then counts only with the payee's
/// `payment_received` credit of the same reference (a window too short to show it leaves the candidate
/// unconfirmed, for a person).
pub fn judge_payment(
    live: &[LedgerEntry],
    payee: Option<&[LedgerEntry]>,
    amount: Micros,
    ctx: &LookupContext<'_>,
    skew_secs: i64,
) -> Lookup {
    let Some(from) = from_secs(ctx, skew_secs) else {
        return Lookup::Inconclusive {
            why: "the log has no time for the intent, so no ledger window can be chosen".into(),
        };
    };
    let reach = reaching_back(live, ctx.copied, ctx.copied_from_origin, from);
    let entries = reach.entries.as_slice();
    let mut found =
        candidates(entries, from, amount, ctx.claimed, |e| e.reason == "payment_sent", |e| e.reference.clone());
    if let Some(payee) = payee {
        let credited = |c: &&LedgerEntry| {
            payee.iter().any(|e| !e.is_debit() && e.reason == "payment_received" && e.reference == c.reference)
        };
        let (confirmed, other): (Vec<&LedgerEntry>, Vec<&LedgerEntry>) = found.into_iter().partition(credited);
        if !other.is_empty() && !covers(payee, from) {
            return Lookup::Inconclusive {
                why: format!(
                    "payment_sent debits of {amount} since the intent that the payee's own ledger cannot confirm \
                     (its last {LEDGER_WINDOW} entries do not reach back to the intent): {}",
                    describe(&other)
                ),
            };
        }
        // Debits the payee's ledger shows no credit for went to someone else: not this payout's.
        found = confirmed;
    }
    match found.as_slice() {
        [] => absent(reach.covers, ctx, &format!("payment_sent debit of {amount}")),
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
            copied: &[],
            copied_from_origin: false,
            legacy_escrow_tag: false,
        };
        let amount = Micros::from_raw(12_340_000).unwrap();
        let old = entry("old", "payment_sent", 1234, 900);
        // The one candidate: after the intent, this amount, unclaimed.
        let e = vec![entry("a", "payment_sent", 1234, 1_001), entry("b", "payment_sent", 1234, 1_002), old.clone()];
        assert!(matches!(judge_payment(&e, None, amount, &ctx(2_000), 0),
            Lookup::Executed { tx_id: Some(ref t), .. } if t == "pay_a"));
        // Another amount, another reason, or before the intent: no candidate; settled and covered -> never ran.
        let e = vec![entry("c", "payment_sent", 1235, 1_001), entry("d", "withdrawal", 1234, 1_001), old.clone()];
        assert_eq!(judge_payment(&e, None, amount, &ctx(2_000), 0), Lookup::NotExecuted);
        // ... but not while the send may still be running.
        assert!(matches!(judge_payment(&e, None, amount, &ctx(1_010), 0), Lookup::Pending { .. }));
        // Two unclaimed candidates: a person decides.
        let e = vec![entry("a", "payment_sent", 1234, 1_001), entry("x", "payment_sent", 1234, 1_003)];
        assert!(matches!(judge_payment(&e, None, amount, &ctx(2_000), 0), Lookup::Inconclusive { .. }));
        // A full window that does not reach back to the intent proves nothing.
        let e: Vec<LedgerEntry> = (0..50).map(|i| entry(&format!("g{i}"), "bet", 100, 1_500)).collect();
        assert!(matches!(judge_payment(&e, None, amount, &ctx(2_000), 0), Lookup::Inconclusive { .. }));
        // The skew allowance reaches back before our own clock's intent time.
        let e = vec![entry("a", "payment_sent", 1234, 995), old];
        assert!(matches!(judge_payment(&e, None, amount, &ctx(2_000), 10), Lookup::Executed { .. }));
    }

    #[test]
    fn where_the_payees_key_is_held_only_a_debit_it_was_credited_for_is_the_payout() {
        let claimed = HashSet::new();
        let ctx = LookupContext {
            since: Some(at(1_000)),
            claimed: &claimed,
            last_error: None,
            now: at(2_000),
            settle: chrono::Duration::seconds(60),
            copied: &[],
            copied_from_origin: false,
            legacy_escrow_tag: false,
        };
        let amount = Micros::from_raw(12_340_000).unwrap();
        // One payment of the amount since the intent, made outside pfsync to another agent.
        let payer = vec![entry("out", "payment_sent", 1234, 1_001), entry("old", "bet", 100, 900)];
        let credit = |reference: &str| LedgerEntry {
            kind: "credit".into(),
            reason: "payment_received".into(),
            reference: Some(reference.into()),
            ..entry("cr", "payment_received", 1234, 1_001)
        };
        let payee_without = vec![entry("p0", "bet", 100, 900)];
        assert_eq!(judge_payment(&payer, Some(&payee_without), amount, &ctx, 0), Lookup::NotExecuted);
        // The payee was credited with that reference: it is the payout.
        let payee_with = vec![credit("pay_out"), entry("p0", "bet", 100, 900)];
        assert!(matches!(judge_payment(&payer, Some(&payee_with), amount, &ctx, 0), Lookup::Executed { .. }));
        // A payee window that does not reach back proves nothing either way.
        let busy: Vec<LedgerEntry> = (0..50).map(|i| entry(&format!("b{i}"), "bet", 100, 1_500)).collect();
        assert!(matches!(judge_payment(&payer, Some(&busy), amount, &ctx, 0), Lookup::Inconclusive { .. }));
        // Without the payee's key, the same debit is taken (the residual case the README states).
        assert!(matches!(judge_payment(&payer, None, amount, &ctx, 0), Lookup::Executed { .. }));
    }

    #[test]
    fn pfsyncs_own_gap_free_copy_extends_a_window_that_no_longer_reaches_the_intent() {
        let claimed = HashSet::new();
        let amount = Micros::from_raw(12_340_000).unwrap();
        // The live window: 50 entries, all after the intent (at 1_000), none of them this payout's.
        let live: Vec<LedgerEntry> = (0..50).map(|i| entry(&format!("n{i}"), "bet", 100, 1_500 + i)).collect();
        // The copy: an entry before the intent, then up to the window's oldest entry.
        let mut copied = vec![entry("c0", "bet", 100, 900), entry("c1", "bet", 100, 1_200)];
        copied.push(live[0].clone());
        let ctx = |copied: &'static [LedgerEntry]| LookupContext {
            since: Some(at(1_000)),
            claimed: &claimed,
            last_error: None,
            now: at(2_000),
            settle: chrono::Duration::seconds(60),
            copied,
            copied_from_origin: false,
            legacy_escrow_tag: false,
        };
        let leak = |v: Vec<LedgerEntry>| -> &'static [LedgerEntry] { Box::leak(v.into_boxed_slice()) };
        // Absent from the window and the copy: it never ran.
        assert_eq!(judge_payment(&live, None, amount, &ctx(leak(copied.clone())), 0), Lookup::NotExecuted);
        // Present in the copy only: found.
        let mut with = copied.clone();
        with.insert(1, entry("mine", "payment_sent", 1234, 1_100));
        assert!(matches!(judge_payment(&live, None, amount, &ctx(leak(with)), 0),
            Lookup::Executed { tx_id: Some(ref t), .. } if t == "pay_mine"));
        // A copy that does not join the window (its newest entry scrolled out) or starts after the intent
        // proves nothing.
        let unjoined = copied[..2].to_vec();
        assert!(matches!(judge_payment(&live, None, amount, &ctx(leak(unjoined)), 0), Lookup::Inconclusive { .. }));
        let late = copied[1..].to_vec();
        assert!(matches!(judge_payment(&live, None, amount, &ctx(leak(late)), 0), Lookup::Inconclusive { .. }));
    }

    #[test]
    fn a_copy_from_the_payers_first_entry_reaches_back_however_young_the_ledger() {
        let claimed = HashSet::new();
        let amount = Micros::from_raw(12_340_000).unwrap();
        // The payer was funded at 995 and paid 60 times from 1_001: every entry is younger than the search's
        // start (the intent at 1_000 less 30 s of clock-skew allowance), and the window holds the last 50.
        let mut all = vec![entry("fund", "deposit", 10_000, 995)];
        all.extend((0..60).map(|i| entry(&format!("p{i}"), "payment_sent", 100, 1_001 + i)));
        let live: Vec<LedgerEntry> = all[all.len() - 50..].to_vec();
        let ctx = |from_origin: bool| LookupContext {
            since: Some(at(1_000)),
            claimed: &claimed,
            last_error: None,
            now: at(2_000),
            settle: chrono::Duration::seconds(60),
            copied: Box::leak(all.clone().into_boxed_slice()),
            copied_from_origin: from_origin,
            legacy_escrow_tag: false,
        };
        // Copied from the first entry on: nothing can be missing, so absence proves it never ran.
        assert_eq!(judge_payment(&live, None, amount, &ctx(true), 30), Lookup::NotExecuted);
        // The same entries without that proof: an older entry might be missing, so nothing is concluded.
        assert!(matches!(judge_payment(&live, None, amount, &ctx(false), 30), Lookup::Inconclusive { .. }));
    }
}
