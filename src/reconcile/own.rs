//! pfsync's own operations as the report shows them: per day, the money the log says pfsync paid and how
//! much of it the provider's records match, and the money at risk (operations whose outcome is not known;
//! of those, the ones past the stale threshold, which a person must decide). The provider's other money (the
//! sandbox's opening balances, payments pfsync did not make) is not pfsync's and is not drawn against it.
//!
//! One fold for both providers: the seed's checks give it grouped rows (`own_operations.sql`), the live
//! provider's checks one row per operation with its class.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use chrono::NaiveDate;

use super::decode::decode;
use super::matching::OWN_OPERATIONS;
use super::{Class, ReconcileError};
use crate::money::Usd;
use crate::operation::OpKind;
use crate::payouts::state::StatusName;

/// Operations of one day (of their last log event), kind, status and class, with their logged money (none
/// for an escrow release or dispute, which carry no amount of their own).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnGroup {
    pub day: NaiveDate,
    pub kind: OpKind,
    pub status: StatusName,
    pub class: Class,
    pub operations: u64,
    pub amount: Option<Usd>,
}

/// `own_operations.sql`.
pub fn groups(batches: &[RecordBatch]) -> Result<Vec<OwnGroup>, ReconcileError> {
    decode(&OWN_OPERATIONS, batches, &["day", "kind", "status", "class"], |r| {
        Ok(OwnGroup {
            day: r.date("day")?,
            kind: r.parsed("kind")?,
            status: r.parsed("status")?,
            class: r.class("class")?,
            operations: r.count("operations")?,
            amount: r.opt_usd("amount_usd")?,
        })
    })
}

/// A number of operations and their money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub operations: u64,
    pub usd: Usd,
}

impl Tally {
    fn add(&mut self, operations: u64, usd: Option<Usd>, what: &'static str) -> Result<(), ReconcileError> {
        self.operations += operations;
        if let Some(u) = usd {
            self.usd = self.usd.checked_add(u).ok_or(ReconcileError::Sum { what })?;
        }
        Ok(())
    }
}

/// One day and kind of pfsync's own operations: what the log says completed, and of that what matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnDay {
    pub day: NaiveDate,
    pub kind: OpKind,
    pub completed: Tally,
    pub matched: Tally,
}

/// Money whose fate is not settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtRisk {
    /// Operations with no final outcome (in flight or unknown): the next `pfsync payouts` resolves them by
    /// lookup, or, past the stale threshold, a person does.
    pub unknown: Tally,
    /// Of `unknown`, those past the stale threshold (`stale_unknown`): for a person to decide.
    pub for_a_person: Tally,
    /// Completed operations the provider's records do not match (a finding of their class).
    pub unmatched: Tally,
}

/// What the report shows of pfsync's own operations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Own {
    /// By day, then kind.
    pub days: Vec<OwnDay>,
    pub at_risk: AtRisk,
}

impl Own {
    /// Payouts only, by day: the chart's bars.
    pub fn payouts(&self) -> impl Iterator<Item = &OwnDay> {
        self.days.iter().filter(|d| d.kind == OpKind::Payout)
    }
}

pub fn fold(groups: impl IntoIterator<Item = OwnGroup>) -> Result<Own, ReconcileError> {
    let mut days: BTreeMap<(NaiveDate, &'static str), OwnDay> = BTreeMap::new();
    let mut at_risk = AtRisk::default();
    for g in groups {
        match g.status {
            StatusName::Completed => {
                let day = days.entry((g.day, g.kind.as_str())).or_insert(OwnDay {
                    day: g.day,
                    kind: g.kind,
                    completed: Tally::default(),
                    matched: Tally::default(),
                });
                day.completed.add(g.operations, g.amount, "completed operations of a day")?;
                if g.class == Class::Matched {
                    day.matched.add(g.operations, g.amount, "matched operations of a day")?;
                } else {
                    at_risk.unmatched.add(g.operations, g.amount, "unmatched operations")?;
                }
            }
            StatusName::InFlight | StatusName::Unknown => {
                at_risk.unknown.add(g.operations, g.amount, "operations with an unknown outcome")?;
                if g.class == Class::StaleUnknown {
                    at_risk.for_a_person.add(g.operations, g.amount, "stale unknown operations")?;
                }
            }
            // Nothing moved: refused by the provider, or a person decided it is not to be paid; a person's
            // `never_ran` is sent again by the next run, where it counts if its outcome is unknown.
            StatusName::Rejected | StatusName::Abandoned | StatusName::NeverRan => {}
        }
    }
    Ok(Own { days: days.into_values().collect(), at_risk })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(day: u32, kind: OpKind, status: StatusName, class: Class, n: u64, cents: Option<i64>) -> OwnGroup {
        OwnGroup {
            day: NaiveDate::from_ymd_opt(2026, 1, day).unwrap(),
            kind,
            status,
            class,
            operations: n,
            amount: cents.map(|c| Usd::from_cents(c).unwrap()),
        }
    }

    fn t(operations: u64, cents: i64) -> Tally {
        Tally { operations, usd: Usd::from_cents(cents).unwrap() }
    }

    #[test]
    fn completed_money_is_drawn_against_what_matched_and_the_rest_is_at_risk() {
        use Class::*;
        use OpKind::*;
        use StatusName::*;
        let own = fold([
            g(2, Payout, Completed, Matched, 3, Some(1375)),
            g(2, Payout, Completed, AmountMismatch, 1, Some(500)),
            g(1, Payout, Completed, Matched, 1, Some(100)),
            g(1, EscrowCreate, Completed, Matched, 1, Some(2000)),
            g(1, EscrowRelease, Completed, Matched, 1, None),
            g(2, Payout, Rejected, Matched, 4, Some(999)),
            g(2, Payout, Unknown, InProgress, 2, Some(300)),
            g(2, Payout, InFlight, StaleUnknown, 1, Some(700)),
        ])
        .unwrap();
        let payouts: Vec<_> = own.payouts().map(|d| (d.day.to_string(), d.completed, d.matched)).collect();
        assert_eq!(
            payouts,
            [("2026-01-01".to_string(), t(1, 100), t(1, 100)), ("2026-01-02".to_string(), t(4, 1875), t(3, 1375))]
        );
        assert_eq!(own.days.len(), 4, "days, then kinds: {:?}", own.days);
        assert_eq!(own.at_risk, AtRisk { unknown: t(3, 1000), for_a_person: t(1, 700), unmatched: t(1, 500) });
    }
}
