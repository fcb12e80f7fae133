//! The implied balances and the daily totals, kept from what changed: the transactions appended since the
//! last run move an agent's balance and a day's count and amount; the operations whose class changed move
//! the day's matched money. A full rebuild computes the same from everything (`implied_balances.sql`,
//! `daily_totals.sql`, and the matched money of every classified operation). Pure.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::DailyTotal;
use super::state::{ImpliedBalance, Tx};
use crate::money::Usd;
use crate::provider::records::TxKind;
use crate::tables::row::Text;

/// A sum went beyond what the money columns hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} overflows DECIMAL(18,2)")]
pub struct Overflow {
    pub what: String,
}

/// Per agent: the implied balance and how many transactions make it.
pub type Balances = BTreeMap<String, (Usd, i64)>;

/// Per day and provider kind: transactions, their amount, the matched part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DaySums {
    pub transactions: i64,
    pub amount: Usd,
    pub matched: Usd,
}

pub type Daily = BTreeMap<(NaiveDate, &'static str), (TxKind, DaySums)>;

fn plus(a: Usd, b: Usd, what: impl FnOnce() -> String) -> Result<Usd, Overflow> {
    a.checked_add(b).ok_or_else(|| Overflow { what: what() })
}

/// What a transaction does to its agent's balance: an escrow lock takes money out, every other kind puts it
/// in (as `implied_balances.sql` sums them).
fn signed(tx: &Tx) -> Result<Usd, Overflow> {
    if tx.kind != TxKind::EscrowLock {
        return Ok(tx.amount);
    }
    Usd::ZERO.checked_sub(tx.amount).ok_or_else(|| Overflow { what: format!("transaction {}", tx.tx_id) })
}

pub fn balances_of(rows: &[ImpliedBalance]) -> Balances {
    rows.iter().map(|r| (r.agent_id.clone(), (r.implied_usd, r.transactions))).collect()
}

pub fn balance_rows(b: &Balances, run_id: &str) -> Vec<ImpliedBalance> {
    b.iter()
        .map(|(agent, (implied, n))| ImpliedBalance {
            agent_id: agent.clone(),
            implied_usd: *implied,
            transactions: *n,
            computed_run_id: run_id.to_string(),
        })
        .collect()
}

pub fn add_to_balances(b: &mut Balances, txs: &[Tx]) -> Result<(), Overflow> {
    for tx in txs {
        let slot = b.entry(tx.agent_id.clone()).or_insert((Usd::ZERO, 0));
        slot.0 = plus(slot.0, signed(tx)?, || format!("the implied balance of {}", tx.agent_id))?;
        slot.1 += 1;
    }
    Ok(())
}

pub fn daily_of(rows: &[DailyTotal]) -> Daily {
    rows.iter()
        .map(|r| {
            let sums = DaySums { transactions: r.transactions, amount: r.amount_usd, matched: r.matched_usd };
            ((r.day, r.kind.as_str()), (r.kind, sums))
        })
        .collect()
}

/// The table's rows, in day and kind order.
pub fn daily_rows(d: &Daily, run_id: &str) -> Vec<DailyTotal> {
    d.iter()
        .map(|(&(day, _), &(kind, s))| DailyTotal {
            day,
            kind,
            transactions: s.transactions,
            amount_usd: s.amount,
            matched_usd: s.matched,
            computed_run_id: run_id.to_string(),
        })
        .collect()
}

fn day_slot(d: &mut Daily, day: NaiveDate, kind: TxKind) -> &mut DaySums {
    &mut d.entry((day, kind.as_str())).or_insert((kind, DaySums::default())).1
}

pub fn add_to_daily(d: &mut Daily, txs: &[Tx]) -> Result<(), Overflow> {
    for tx in txs {
        let s = day_slot(d, tx.date, tx.kind);
        s.transactions += 1;
        s.amount = plus(s.amount, tx.amount, || format!("the {} total of {}", tx.kind.as_str(), tx.date))?;
    }
    Ok(())
}

/// Move each day's matched money by `cents`. A day and kind with matched money but no transaction of that
/// kind (an operation matched a transaction of another kind) keeps a row with no transactions, so the
/// matched total is the sum of the rows.
pub fn add_matched(d: &mut Daily, deltas: &BTreeMap<(NaiveDate, &'static str), i64>) -> Result<(), Overflow> {
    for (&(day, kind), &cents) in deltas {
        let Some(kind) = <TxKind as Text>::parse(kind) else { continue };
        let s = day_slot(d, day, kind);
        let delta = Usd::from_cents(cents).map_err(|_| Overflow { what: format!("matched money of {day}") })?;
        s.matched = plus(s.matched, delta, || format!("the matched {} money of {day}", kind.as_str()))?;
    }
    d.retain(|_, (_, s)| *s != DaySums::default());
    Ok(())
}
