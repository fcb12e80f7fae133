//! An agent's ledger as a chain: every balance change at the casino writes one entry with the balance after
//! it, so each entry's balance before (`balance_after` less its own movement) is the previous entry's
//! `balance_after`. The provider orders entries only by whole second (`GET /auth/ledger`), so the chain is what orders
//! entries of one second, and a chain that breaks between two reads is a gap. Pure functions, tested
//! without a network.

use std::collections::HashSet;

use crate::micros::Micros;
use crate::provider::LedgerEntry;

/// The newest entry of an agent that the entries table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub entry_id: String,
    pub balance_after: Micros,
    pub seq: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// The stored newest entry is no longer in a full window: more than the window was written since.
    WindowFull,
    /// The oldest new entry does not continue the stored newest one's balance.
    ChainBreak,
}

impl GapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::WindowFull => "window_full",
            GapKind::ChainBreak => "chain_break",
        }
    }
}

/// A gap between the stored newest entry and the oldest entry read after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub kind: GapKind,
    pub after_entry_id: String,
    pub after_balance: Micros,
    pub before_entry_id: String,
    pub before_balance: Micros,
    pub detail: String,
}

/// What to append for one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// New entries, oldest first, each with its `ledger_seq`.
    pub new: Vec<(LedgerEntry, i64)>,
    /// Entries of the window the table holds already.
    pub known: u64,
    /// Where the chain from the stored newest entry through the new ones breaks.
    pub gaps: Vec<Gap>,
}

/// The window oldest first: by second, and within a second along the balance chain from the entry before.
pub fn chain_order(window: &[LedgerEntry]) -> Vec<LedgerEntry> {
    let mut by_time: Vec<LedgerEntry> = window.to_vec();
    by_time.sort_by_key(|e| e.created_at);
    let mut out: Vec<LedgerEntry> = Vec::with_capacity(by_time.len());
    let mut rest = by_time.as_slice();
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|e| e.created_at == first.created_at).count();
        let (second, tail) = rest.split_at(n);
        let prev = out.last().map(|e| e.balance_after);
        out.extend(order_second(second.to_vec(), prev));
        rest = tail;
    }
    out
}

/// One second's entries along the chain. The first is the one that continues `prev`, else one that no other
/// entry of the second leads to; an ambiguous chain (equal amounts in and out) keeps the provider's order.
fn order_second(mut rest: Vec<LedgerEntry>, prev: Option<Micros>) -> Vec<LedgerEntry> {
    let mut out = Vec::with_capacity(rest.len());
    let mut cur = prev;
    while !rest.is_empty() {
        let continues = rest.iter().position(|e| cur.is_some() && e.balance_before() == cur);
        let starts = || {
            rest.iter().position(|e| !rest.iter().any(|o| o.id != e.id && Some(o.balance_after) == e.balance_before()))
        };
        let i = continues.or_else(starts).unwrap_or(0);
        let e = rest.remove(i);
        cur = Some(e.balance_after);
        out.push(e);
    }
    out
}

/// What one sync appends for an agent: the window's entries the table does not hold (`known` are the ids it
/// does), numbered on from the stored newest, and every gap: between that and the oldest new one, and
/// between new ones (the window's 50 are the newest by whole second only: where it cuts through a second it
/// may hold some of that second's entries and not others, so it can have holes of its own).
/// `limit` is how many entries a read answers at most (the provider's window).
pub fn plan(window: &[LedgerEntry], limit: usize, stored: Option<&Stored>, known: &HashSet<String>) -> Plan {
    let ordered = chain_order(window);
    let held = ordered.iter().filter(|e| known.contains(&e.id)).count() as u64;
    let first_seq = stored.map_or(1, |s| s.seq + 1);
    let new: Vec<(LedgerEntry, i64)> = ordered
        .into_iter()
        .filter(|e| !known.contains(&e.id))
        .enumerate()
        .map(|(i, e)| (e, first_seq + i as i64))
        .collect();
    let mut gaps: Vec<Gap> = Vec::new();
    if let (Some(s), Some((oldest, _))) = (stored, new.first()) {
        gaps.extend(gap(window, limit, s, oldest));
    }
    for pair in new.windows(2) {
        let (prev, next) = (&pair[0].0, &pair[1].0);
        let s = Stored { entry_id: prev.id.clone(), balance_after: prev.balance_after, seq: pair[0].1 };
        if next.balance_before() != Some(prev.balance_after) {
            gaps.extend(gap(&[], limit, &s, next));
        }
    }
    Plan { new, known: held, gaps }
}

/// The gap between the stored entry `s` and `oldest`, the next one read. `window` is the window `oldest`
/// came from, to tell whether `s` scrolled out of it (empty: `s` is from the same window).
fn gap(window: &[LedgerEntry], limit: usize, s: &Stored, oldest: &LedgerEntry) -> Option<Gap> {
    let before = oldest.balance_before().unwrap_or(oldest.balance_after);
    let make = |kind, detail| Gap {
        kind,
        after_entry_id: s.entry_id.clone(),
        after_balance: s.balance_after,
        before_entry_id: oldest.id.clone(),
        before_balance: before,
        detail,
    };
    let still_listed = window.iter().any(|e| e.id == s.entry_id);
    if !window.is_empty() && !still_listed && window.len() >= limit {
        return Some(make(
            GapKind::WindowFull,
            format!(
                "the newest stored entry {} is no longer among the last {limit} entries the provider lists: \
                 more than {limit} entries were written since the last sync and some of them cannot be read \
                 (the oldest; or, when more than {limit} fall in one second, the newest of that second, \
                 which the provider lists after the earlier ones) (balance after the stored entry {}, before the \
                 oldest entry read {}); sync more often",
                s.entry_id, s.balance_after, before
            ),
        ));
    }
    if before != s.balance_after {
        return Some(make(
            GapKind::ChainBreak,
            format!(
                "the balance chain breaks: after entry {} the balance was {}, but the next entry read, {}, starts \
                 from {}",
                s.entry_id, s.balance_after, oldest.id, before
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live casino's window.
    const LEDGER_WINDOW: usize = 50;

    fn m(s: &str) -> Micros {
        Micros::parse(s).unwrap()
    }

    fn entry(id: &str, kind: &str, amount: &str, after: &str, at: i64) -> LedgerEntry {
        LedgerEntry {
            id: id.into(),
            agent_id: "ag_a".into(),
            kind: kind.into(),
            amount: m(amount),
            balance_after: m(after),
            reason: "payment_sent".into(),
            reference: None,
            service: None,
            created_at: at,
        }
    }

    #[test]
    fn entries_of_one_second_follow_the_balance_chain() {
        // 10.00 -> 9 -> 8.5 -> 9.5, all in one second, listed in a scrambled order.
        let w = vec![
            entry("c", "credit", "1", "9.5", 100),
            entry("a", "debit", "1", "9", 100),
            entry("b", "debit", "0.5", "8.5", 100),
            entry("z", "credit", "10", "10", 99),
        ];
        let ids: Vec<String> = chain_order(&w).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["z", "a", "b", "c"]);
        // Without the entry before, the start is the one nothing in the second leads to.
        let ids: Vec<String> = chain_order(&w[..3]).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn new_entries_are_numbered_on_and_a_continuing_chain_is_no_gap() {
        let w = vec![entry("b", "debit", "1", "8", 101), entry("a", "debit", "1", "9", 100)];
        let stored = Stored { entry_id: "a".into(), balance_after: m("9"), seq: 7 };
        let p = plan(&w, LEDGER_WINDOW, Some(&stored), &HashSet::from(["a".to_string()]));
        assert_eq!(p.known, 1);
        assert_eq!(p.new.iter().map(|(e, s)| (e.id.as_str(), *s)).collect::<Vec<_>>(), [("b", 8)]);
        assert!(p.gaps.is_empty());
        // The first sync of an agent: everything, from 1, no gap to find.
        let p = plan(&w, LEDGER_WINDOW, None, &HashSet::new());
        assert_eq!(p.new.iter().map(|(e, s)| (e.id.as_str(), *s)).collect::<Vec<_>>(), [("a", 1), ("b", 2)]);
        assert!(p.gaps.is_empty());
    }

    #[test]
    fn a_full_window_without_the_stored_entry_or_a_broken_chain_is_a_gap() {
        let full: Vec<LedgerEntry> = (0..LEDGER_WINDOW as i64)
            .map(|i| entry(&format!("e{i}"), "debit", "0.01", &format!("{}", 5.0 - 0.01 * (i + 1) as f64), 200 + i))
            .collect();
        let stored = Stored { entry_id: "old".into(), balance_after: m("5.50"), seq: 3 };
        let p = plan(&full, LEDGER_WINDOW, Some(&stored), &HashSet::new());
        assert_eq!(p.gaps.len(), 1, "{:?}", p.gaps);
        let g = &p.gaps[0];
        assert_eq!((g.kind, g.after_entry_id.as_str(), g.before_entry_id.as_str()), (GapKind::WindowFull, "old", "e0"));
        assert_eq!((g.after_balance, g.before_balance), (m("5.50"), m("5")));
        assert_eq!(p.new.len(), LEDGER_WINDOW);
        assert_eq!(p.new[0].1, 4);
        // A short window whose oldest new entry does not start where the stored one ended.
        let w = vec![entry("x", "debit", "1", "3", 300)];
        let p = plan(&w, LEDGER_WINDOW, Some(&stored), &HashSet::new());
        assert_eq!(p.gaps.iter().map(|g| g.kind).collect::<Vec<_>>(), [GapKind::ChainBreak]);
        // No new entries: nothing to compare, no gap.
        let p = plan(&w, LEDGER_WINDOW, Some(&stored), &HashSet::from(["x".to_string()]));
        assert_eq!((p.gaps.len(), p.new.len(), p.known), (0, 0, 1));
        // A hole inside the window (it cut through a second and kept some of its entries, not others).
        let holed = vec![entry("p", "debit", "1", "4", 400), entry("r", "debit", "1", "2", 400)];
        let p = plan(&holed, LEDGER_WINDOW, None, &HashSet::new());
        let g: Vec<(&str, &str)> =
            p.gaps.iter().map(|g| (g.after_entry_id.as_str(), g.before_entry_id.as_str())).collect();
        assert_eq!(g, [("p", "r")]);
    }
}
