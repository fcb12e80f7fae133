//! The live provider's money per day, from the ledger copy (`purpleflea.ledger.entries`), and pfsync's own
//! operations in the report's terms: what the seed's `daily_totals.sql`, `daily_matched.sql` and
//! `own_operations.sql` give from the seed's transaction list. Pure, over what the live checks read.
//!
//! A payment shows on two held ledgers (the payer's debit, the payee's credit): each kind is counted on one
//! side only, the side the money leaves from for payouts and escrow locks, the receiving side for escrow
//! releases and timeout refunds, so nothing is counted twice.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;

use super::Class;
use super::live::{Entry, LiveData};
use super::own::OwnGroup;
use crate::micros::Micros;
use crate::operation::OpKind;
use crate::provider::records::TxKind;

/// Provider money of one day and kind, exact to the micro-dollar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveDay {
    pub day: NaiveDate,
    pub kind: TxKind,
    pub transactions: i64,
    pub amount: Micros,
    /// Of which the entries of operations that matched.
    pub matched: Micros,
}

/// The kind a ledger entry counts as, on the side it is counted on.
fn kind(e: &Entry) -> Option<TxKind> {
    if e.is_debit() {
        if e.reason == "payment_sent" {
            return Some(TxKind::Payout);
        }
        if e.reason.starts_with("escrow_lock: ") {
            return Some(TxKind::EscrowLock);
        }
    } else {
        if e.entry_id.ends_with("_release_credit") {
            return Some(TxKind::EscrowRelease);
        }
        if e.entry_id.ends_with("_timeout_credit") {
            return Some(TxKind::EscrowRefund);
        }
    }
    None
}

/// The entries of operations that completed and matched: a payout's `payment_sent` debit, an escrow create's
/// `<esc>_debit`, a release's `<esc>_release_credit`.
fn matched_entries<'a>(data: &'a LiveData, classes: &[Class]) -> HashSet<&'a str> {
    let mut out = HashSet::new();
    for (op, class) in data.ops.iter().zip(classes) {
        if *class != Class::Matched || !op.is_completed() {
            continue;
        }
        let wanted: Box<dyn Fn(&Entry) -> bool> = match (op.kind, op.tx_id.as_deref(), op.escrow_id.as_deref()) {
            (OpKind::Payout, Some(tx), _) => {
                Box::new(move |e| e.is_debit() && e.reason == "payment_sent" && e.reference.as_deref() == Some(tx))
            }
            (OpKind::EscrowCreate, Some(tx), _) => Box::new(move |e| e.entry_id == tx),
            (OpKind::EscrowRelease, _, Some(esc)) => {
                let id = format!("{esc}_release_credit");
                Box::new(move |e| e.entry_id == id)
            }
            _ => continue,
        };
        out.extend(data.entries.iter().filter(|e| wanted(e)).map(|e| e.entry_id.as_str()));
    }
    out
}

/// Money per day and kind. `classes` are the operations' classes, in the order of `data.ops`.
pub fn daily(data: &LiveData, classes: &[Class]) -> Vec<LiveDay> {
    let matched = matched_entries(data, classes);
    let mut days: BTreeMap<(NaiveDate, &'static str), LiveDay> = BTreeMap::new();
    for e in &data.entries {
        let Some(kind) = kind(e) else { continue };
        let d = days.entry((e.created_date, kind.as_str())).or_insert(LiveDay {
            day: e.created_date,
            kind,
            transactions: 0,
            amount: Micros::ZERO,
            matched: Micros::ZERO,
        });
        d.transactions += 1;
        // A day's total beyond the money range cannot happen with amounts in range and counts this small;
        // should it, the total stays where it was rather than wrap.
        d.amount = d.amount.checked_add(e.amount_usd).unwrap_or(d.amount);
        if matched.contains(e.entry_id.as_str()) {
            d.matched = d.matched.checked_add(e.amount_usd).unwrap_or(d.matched);
        }
    }
    days.into_values().collect()
}

/// Each logged operation as one [`OwnGroup`], on the day of its last log event.
pub fn own_groups(data: &LiveData, classes: &[Class]) -> Vec<OwnGroup> {
    data.ops
        .iter()
        .zip(classes)
        .filter_map(|(op, class)| {
            Some(OwnGroup {
                day: op.last_recorded_at.date_naive(),
                kind: op.kind,
                status: op.status.name()?,
                class: *class,
                operations: 1,
                amount: op.amount_usd,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::ledger::rows::EntryType;
    use crate::money::Usd;
    use crate::payouts::state::{Status, Summary};

    fn entry(id: &str, agent: &str, debit: bool, amount: &str, reason: &str, reference: Option<&str>) -> Entry {
        let at = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        Entry {
            entry_id: id.into(),
            agent_id: agent.into(),
            r#type: if debit { EntryType::Debit } else { EntryType::Credit },
            amount_usd: Micros::parse(amount).unwrap(),
            balance_after_usd: Micros::ZERO,
            reason: reason.into(),
            reference: reference.map(str::to_string),
            service: None,
            created_at: at,
            ledger_seq: 0,
            created_date: at.date_naive(),
            synced_at: at,
        }
    }

    fn op(id: &str, kind: OpKind, status: Status, amount: Option<&str>, tx: Option<&str>) -> Summary {
        Summary {
            operation_id: id.into(),
            kind,
            status,
            attempts: 1,
            agent_id: Some("ag_payee".into()),
            counterparty_agent_id: None,
            amount_usd: amount.map(|a| Usd::parse(a).unwrap()),
            tx_id: tx.map(str::to_string),
            escrow_id: None,
            error_code: None,
            error_message: None,
            last_recorded_at: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 8).unwrap(),
        }
    }

    #[test]
    fn payments_count_once_on_the_payer_side_and_matched_money_is_the_matched_operations() {
        let completed = || Status::Completed { tx_id: None, escrow_id: None };
        let data = LiveData {
            ops: vec![
                op("p1", OpKind::Payout, completed(), Some("2.50"), Some("pay_1")),
                op("p2", OpKind::Payout, completed(), Some("1.00"), Some("pay_2")),
                op("p3", OpKind::Payout, Status::Unknown { attempt: 1 }, Some("4.00"), None),
            ],
            entries: vec![
                entry("e1", "ag_payer", true, "2.50", "payment_sent", Some("pay_1")),
                entry("e2", "ag_payee", false, "2.50", "payment_received", Some("pay_1")),
                entry("e3", "ag_payer", true, "1.00", "payment_sent", Some("pay_2")),
                // Money pfsync did not move: counted as the provider's, never matched.
                entry("e4", "ag_payer", true, "7.000001", "payment_sent", Some("pay_x")),
                entry("e5", "ag_payer", true, "3.00", "escrow_lock: esc_1", Some("esc_1")),
                entry("esc_1_release_credit", "ag_payee", false, "2.97", "escrow_release: esc_1", Some("esc_1")),
                entry("e6", "ag_payer", false, "100.00", "deposit", None),
            ],
            ..LiveData::default()
        };
        // p2's payment was found to be for someone else: not matched.
        let classes = [Class::Matched, Class::AgentMismatch, Class::InProgress];
        let days = daily(&data, &classes);
        let got: Vec<_> =
            days.iter().map(|d| (d.kind, d.transactions, d.amount.to_string(), d.matched.to_string())).collect();
        assert_eq!(
            got,
            [
                (TxKind::EscrowLock, 1, "3".to_string(), "0".to_string()),
                (TxKind::EscrowRelease, 1, "2.97".to_string(), "0".to_string()),
                (TxKind::Payout, 3, "10.500001".to_string(), "2.5".to_string()),
            ]
        );
        let groups = own_groups(&data, &classes);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[2].status, crate::payouts::state::StatusName::Unknown);
        assert_eq!(groups[0].day, NaiveDate::from_ymd_opt(2026, 3, 4).unwrap());
    }
}
