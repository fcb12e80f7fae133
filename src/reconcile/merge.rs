//! A run that classifies only what changed, as a pure function of what it read: the classification rows
//! every run reads (the unsettled ones), the settled rows the new data concerns (whole files of them), the
//! log events and provider transactions appended since the last run, and what two lookups found. It folds
//! the new events into their operations as the `purpleflea.payouts.status` view folds events, matches the new
//! transactions by key (then by the logged tx_id) as `classified.sql` does, pairs keyless payouts with the
//! completed payouts they repeat as `unclaimed_transactions.sql` does, classifies (`classify.rs`), and says
//! which rows to write and how the daily matched money moves.
//!
//! Every provider transaction with a key is either counted in the match of each operation carrying its key,
//! or held as an unclaimed row: so an operation logged after its transaction finds it without reading the
//! ledger, and a transaction's key is looked up in the state, never in the whole ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::classify::{classify, classify_unclaimed};
use super::findings::Class;
use super::state::{ClassificationRow, Found, KeyMatch, Operation, Subject, Tx, Unclaimed, Versions};
use crate::money::Usd;
use crate::operation::OpKind;
use crate::payouts::event::{Event, LogEvent};
use crate::payouts::state::StatusName;
use crate::provider::records::TxKind;

/// Where a row came from: the unsettled partition (rewritten whole by every run that changes it), a file of
/// settled rows (rewritten when one of its rows changes), or this run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Unsettled,
    File(String),
    New,
}

/// A stored row, decoded, and where it is.
#[derive(Debug, Clone)]
pub struct Held {
    pub row: ClassificationRow,
    pub subject: Subject,
    pub origin: Origin,
}

/// What the incremental rules cannot decide without reading the whole history; the run rebuilds instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedsRebuild {
    /// New events carry a key greater than the operation's: its transactions are another key's now.
    #[error("operation {operation_id} was logged with another idempotency key ({was} before, {now} now)")]
    KeyChanged { operation_id: String, was: String, now: String },
}

/// A completed logged payout, as keyless payouts are compared with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPayout {
    pub operation_id: String,
    pub agent_id: String,
    pub amount: Usd,
    pub reason: String,
    /// The transaction the log recorded as its outcome: that transaction is this payout, not a repeat of it
    /// (a provider that keeps no keys, or a person's `pfsync resolve completed --tx-id`).
    pub tx_id: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    subject: Subject,
    /// The stored row, if there was one.
    row: Option<ClassificationRow>,
    origin: Origin,
    /// The operation's recorded tx_id changed in this run (or the operation is new with one).
    log_tx_changed: bool,
    /// The operation became a completed payout in this run.
    became_completed_payout: bool,
}

impl Entry {
    fn op(&self) -> Option<&Operation> {
        match &self.subject {
            Subject::Operation(op) => Some(op),
            Subject::Unclaimed(_) => None,
        }
    }
}

/// The rows to write, and what the daily matched money moves by.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The whole unsettled partition as it is now (write only when [`Outcome::unsettled_changed`]).
    pub unsettled: Vec<ClassificationRow>,
    pub unsettled_changed: bool,
    /// Settled rows to add: new ones, ones that settled in this run, and those of every rewritten file.
    pub settled: Vec<ClassificationRow>,
    /// Files of settled rows to remove: each holds a row that changed (its other rows are in `settled`).
    pub rewritten_files: BTreeSet<String>,
    /// Change of matched money per provider day and kind.
    pub matched: BTreeMap<(NaiveDate, &'static str), i64>,
    /// Operations whose row changed.
    pub changed_operations: u64,
}

/// The run's state while it merges.
#[derive(Debug, Clone)]
pub struct Merge {
    ops: BTreeMap<String, Entry>,
    unclaimed: Vec<Entry>,
    /// An unsettled row went away (a transaction was claimed, a keyless payout found what it repeats).
    removed_unsettled: bool,
}

/// An operation's new events, folded as the status view folds them.
struct Folded {
    kind: OpKind,
    completed: bool,
    rejected: bool,
    abandoned: bool,
    attempts: i32,
    never_ran_attempt: Option<i32>,
    unknown_attempt: Option<i32>,
    agent_id: Option<String>,
    amount: Option<Usd>,
    reason: Option<String>,
    key: String,
    tx_id: Option<String>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// SQL's `max` over text: the greatest spelling.
fn max_kind(a: OpKind, b: OpKind) -> OpKind {
    if b.as_str() > a.as_str() { b } else { a }
}

fn fold(events: &[&LogEvent]) -> Option<Folded> {
    let first = events.first()?;
    let mut f = Folded {
        kind: first.kind,
        completed: false,
        rejected: false,
        abandoned: false,
        attempts: first.attempt,
        never_ran_attempt: None,
        unknown_attempt: None,
        agent_id: None,
        amount: None,
        reason: None,
        key: first.idempotency_key.clone(),
        tx_id: None,
        first: first.recorded_at,
        last: first.recorded_at,
    };
    for e in events {
        f.kind = max_kind(f.kind, e.kind);
        f.completed |= e.event == Event::Completed;
        f.rejected |= e.event == Event::Rejected;
        f.abandoned |= e.event == Event::Abandoned;
        f.attempts = f.attempts.max(e.attempt);
        if e.event == Event::NeverRan {
            f.never_ran_attempt = f.never_ran_attempt.max(Some(e.attempt));
        }
        if e.event == Event::Unknown {
            f.unknown_attempt = f.unknown_attempt.max(Some(e.attempt));
        }
        // Option's order puts None first: the max of values and NULLs is the greatest value, as in SQL.
        f.agent_id = f.agent_id.take().max(e.agent_id.clone());
        f.amount = f.amount.max(e.amount_usd);
        f.reason = f.reason.take().max(e.reason.clone());
        if e.idempotency_key > f.key {
            f.key = e.idempotency_key.clone();
        }
        if e.event == Event::Completed {
            f.tx_id = f.tx_id.take().max(e.tx_id.clone());
        }
        f.first = f.first.min(e.recorded_at);
        f.last = f.last.max(e.recorded_at);
    }
    Some(f)
}

/// What an operation's events say about its status, as the status view aggregates them.
#[derive(Debug, Clone, Copy)]
struct Facts {
    completed: bool,
    rejected: bool,
    abandoned: bool,
    /// The highest attempt a person found never ran, and the highest whose outcome was unknown.
    never_ran_attempt: Option<i32>,
    unknown_attempt: Option<i32>,
    attempts: i32,
}

/// The status view's rule: a completed event wins, then a rejected one, then a person's abandoned;
/// otherwise never_ran when a person found the latest attempt never ran, unknown when its outcome was
/// unknown, else in flight.
fn status_of(f: Facts) -> StatusName {
    if f.completed {
        StatusName::Completed
    } else if f.rejected {
        StatusName::Rejected
    } else if f.abandoned {
        StatusName::Abandoned
    } else if f.never_ran_attempt == Some(f.attempts) {
        StatusName::NeverRan
    } else if f.unknown_attempt == Some(f.attempts) {
        StatusName::Unknown
    } else {
        StatusName::InFlight
    }
}

fn completed_payout(op: &Operation) -> Option<CompletedPayout> {
    if op.kind != OpKind::Payout || op.status != StatusName::Completed {
        return None;
    }
    Some(CompletedPayout {
        operation_id: op.operation_id.clone(),
        agent_id: op.agent_id.clone()?,
        amount: op.amount?,
        reason: op.reason.clone()?,
        tx_id: op.log_tx_id.clone(),
    })
}

fn repeats(tx: &Tx, p: &CompletedPayout) -> bool {
    p.agent_id == tx.agent_id
        && p.amount == tx.amount
        && tx.reference.as_deref() == Some(p.reason.as_str())
        && p.tx_id.as_deref() != Some(tx.tx_id.as_str())
}

/// `tx` counted into a key's match.
fn add(matched: Option<KeyMatch>, tx: &Tx) -> Option<KeyMatch> {
    match matched {
        Some(mut m) => {
            m.add(&KeyMatch::of(tx));
            Some(m)
        }
        None => Some(KeyMatch::of(tx)),
    }
}

/// A payout with no key: the transactions `unclaimed_transactions.sql` pairs with completed payouts.
pub fn is_keyless_payout(tx: &Tx) -> bool {
    tx.kind == TxKind::Payout && tx.key.is_none()
}

impl Merge {
    /// The rows the run read back. Every row of a file that is in `held` must be there: a file is rewritten
    /// whole when one of its rows changes.
    pub fn new(held: Vec<Held>) -> Merge {
        let mut ops = BTreeMap::new();
        let mut unclaimed = Vec::new();
        for h in held {
            let entry = Entry {
                subject: h.subject,
                row: Some(h.row),
                origin: h.origin,
                log_tx_changed: false,
                became_completed_payout: false,
            };
            match &entry.subject {
                Subject::Operation(op) => {
                    ops.insert(op.operation_id.clone(), entry);
                }
                Subject::Unclaimed(_) => unclaimed.push(entry),
            }
        }
        Merge { ops, unclaimed, removed_unsettled: false }
    }

    /// Fold the events appended since the last run into their operations (new ones start here).
    pub fn apply_events(&mut self, events: &[LogEvent]) -> Result<(), NeedsRebuild> {
        let mut by_op: BTreeMap<&str, Vec<&LogEvent>> = BTreeMap::new();
        for e in events {
            by_op.entry(e.operation_id.as_str()).or_default().push(e);
        }
        for (id, events) in by_op {
            let Some(f) = fold(&events) else { continue };
            match self.ops.get_mut(id) {
                Some(entry) => {
                    let Subject::Operation(op) = &mut entry.subject else { continue };
                    if f.key > op.key {
                        return Err(NeedsRebuild::KeyChanged {
                            operation_id: id.to_string(),
                            was: op.key.clone(),
                            now: f.key,
                        });
                    }
                    let was_completed_payout = completed_payout(op).is_some();
                    let attempts = op.attempts.max(f.attempts);
                    // A never_ran or unknown status means the highest attempt so far was so; an earlier one is
                    // below every attempt to come, and the final statuses stay whatever comes.
                    let was = |s: StatusName| (op.status == s).then_some(op.attempts);
                    op.status = status_of(Facts {
                        completed: op.status == StatusName::Completed || f.completed,
                        rejected: op.status == StatusName::Rejected || f.rejected,
                        abandoned: op.status == StatusName::Abandoned || f.abandoned,
                        never_ran_attempt: was(StatusName::NeverRan).max(f.never_ran_attempt),
                        unknown_attempt: was(StatusName::Unknown).max(f.unknown_attempt),
                        attempts,
                    });
                    op.attempts = attempts;
                    op.kind = max_kind(op.kind, f.kind);
                    op.agent_id = op.agent_id.take().max(f.agent_id);
                    op.amount = op.amount.max(f.amount);
                    op.reason = op.reason.take().max(f.reason);
                    let tx_id = op.log_tx_id.clone().max(f.tx_id);
                    entry.log_tx_changed |= tx_id != op.log_tx_id;
                    op.log_tx_id = tx_id;
                    op.first_recorded_at = op.first_recorded_at.min(f.first);
                    op.last_recorded_at = op.last_recorded_at.max(f.last);
                    entry.became_completed_payout |= !was_completed_payout && completed_payout(op).is_some();
                }
                None => {
                    let op = Operation {
                        operation_id: id.to_string(),
                        kind: f.kind,
                        status: status_of(Facts {
                            completed: f.completed,
                            rejected: f.rejected,
                            abandoned: f.abandoned,
                            never_ran_attempt: f.never_ran_attempt,
                            unknown_attempt: f.unknown_attempt,
                            attempts: f.attempts,
                        }),
                        attempts: f.attempts,
                        agent_id: f.agent_id,
                        amount: f.amount,
                        reason: f.reason,
                        key: f.key,
                        log_tx_id: f.tx_id,
                        first_recorded_at: f.first,
                        last_recorded_at: f.last,
                        found: Found::None,
                        class: Class::InProgress,
                    };
                    let entry = Entry {
                        log_tx_changed: op.log_tx_id.is_some(),
                        became_completed_payout: completed_payout(&op).is_some(),
                        subject: Subject::Operation(op),
                        row: None,
                        origin: Origin::New,
                    };
                    self.ops.insert(id.to_string(), entry);
                }
            }
        }
        Ok(())
    }

    /// Match the new transactions by key: each key's transactions (those counted before, or held unclaimed,
    /// and the new ones) go to every operation carrying it; a key no operation carries keeps its
    /// transactions unclaimed.
    pub fn claim_keys(&mut self, txs: &[Tx]) {
        let mut new_by_key: BTreeMap<&str, Vec<&Tx>> = BTreeMap::new();
        for tx in txs {
            if let Some(k) = &tx.key {
                new_by_key.entry(k.as_str()).or_default().push(tx);
            }
        }
        let mut holders: HashMap<String, Vec<String>> = HashMap::new();
        for (id, e) in &self.ops {
            if let Some(op) = e.op() {
                holders.entry(op.key.clone()).or_default().push(id.clone());
            }
        }
        let new_op_keys: BTreeSet<String> = self
            .ops
            .values()
            .filter(|e| e.origin == Origin::New)
            .filter_map(|e| e.op().map(|o| o.key.clone()))
            .collect();
        let keys: BTreeSet<String> = new_by_key.keys().map(|k| k.to_string()).chain(new_op_keys).collect();
        for key in keys {
            let ids = holders.get(&key).cloned().unwrap_or_default();
            let known = ids.iter().filter_map(|id| self.ops.get(id)).find(|e| e.origin != Origin::New);
            // What the state already counted for this key: the match of an operation it held that carries
            // it, or else the transactions it held unclaimed.
            let mut matched: Option<KeyMatch> = match known {
                Some(e) => match e.op().map(|o| &o.found) {
                    Some(Found::ByKey(k)) => Some(k.clone()),
                    _ => None,
                },
                None => self.unclaimed_with_key(&key).fold(None, add),
            };
            matched = new_by_key.get(key.as_str()).into_iter().flatten().copied().fold(matched, add);
            if ids.is_empty() {
                for tx in new_by_key.get(key.as_str()).into_iter().flatten() {
                    self.unclaimed.push(Entry {
                        subject: Subject::Unclaimed(Unclaimed { tx: (*tx).clone(), repeats: None, class: None }),
                        row: None,
                        origin: Origin::New,
                        log_tx_changed: false,
                        became_completed_payout: false,
                    });
                }
                continue;
            }
            if let Some(m) = matched {
                for id in &ids {
                    if let Some(Subject::Operation(op)) = self.ops.get_mut(id).map(|e| &mut e.subject) {
                        op.found = Found::ByKey(m.clone());
                    }
                }
            }
            let before = self.unclaimed.len();
            self.unclaimed
                .retain(|e| !matches!(&e.subject, Subject::Unclaimed(u) if u.tx.key.as_deref() == Some(key.as_str())));
            self.removed_unsettled |= self.unclaimed.len() != before;
        }
    }

    fn unclaimed_with_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Tx> + 'a {
        self.unclaimed.iter().filter_map(move |e| match &e.subject {
            Subject::Unclaimed(u) if u.tx.key.as_deref() == Some(key) => Some(&u.tx),
            _ => None,
        })
    }

    /// The tx_ids the run must look up in the transactions table: recorded by operations that no key
    /// matches, recorded in this run, and neither among the new transactions nor held unclaimed.
    pub fn tx_ids_wanted(&self, txs: &[Tx]) -> BTreeSet<String> {
        let known: HashSet<&str> = txs.iter().map(|t| t.tx_id.as_str()).chain(self.unclaimed_ids()).collect();
        self.ops
            .values()
            .filter(|e| e.log_tx_changed)
            .filter_map(Entry::op)
            .filter(|op| !matches!(op.found, Found::ByKey(_)))
            .filter_map(|op| op.log_tx_id.as_deref())
            .filter(|t| !known.contains(t))
            .map(str::to_string)
            .collect()
    }

    fn unclaimed_ids(&self) -> impl Iterator<Item = &str> {
        self.unclaimed.iter().filter_map(|e| match &e.subject {
            Subject::Unclaimed(u) => Some(u.tx.tx_id.as_str()),
            Subject::Operation(_) => None,
        })
    }

    /// Match by the recorded tx_id the operations no key matches: those whose recorded tx_id changed, and
    /// those whose recorded transaction arrived now. `fetched` holds what [`Merge::tx_ids_wanted`] asked for.
    pub fn match_tx_ids(&mut self, txs: &[Tx], fetched: &HashMap<String, Tx>) {
        let mut by_id: HashMap<String, Tx> = fetched.clone();
        for e in &self.unclaimed {
            if let Subject::Unclaimed(u) = &e.subject {
                by_id.insert(u.tx.tx_id.clone(), u.tx.clone());
            }
        }
        let arrived: HashSet<&str> = txs.iter().map(|t| t.tx_id.as_str()).collect();
        for t in txs {
            by_id.insert(t.tx_id.clone(), t.clone());
        }
        for e in self.ops.values_mut() {
            let changed = e.log_tx_changed;
            let Subject::Operation(op) = &mut e.subject else { continue };
            if matches!(op.found, Found::ByKey(_)) {
                continue;
            }
            let Some(t) = op.log_tx_id.as_deref() else { continue };
            if !changed && !arrived.contains(t) {
                continue;
            }
            op.found = match by_id.get(t) {
                Some(tx) => Found::ByTxId {
                    tx_id: tx.tx_id.clone(),
                    agent_id: tx.agent_id.clone(),
                    amount: tx.amount,
                    date: tx.date,
                },
                None => Found::None,
            };
        }
    }

    /// Pair keyless payouts with the completed payouts they repeat: each new one with every completed payout
    /// (those the run holds, and `settled` that a lookup found among the rest), each held one with the
    /// payouts that completed in this run.
    pub fn pair_keyless(&mut self, txs: &[Tx], settled: &[CompletedPayout]) {
        let held: Vec<CompletedPayout> = self.ops.values().filter_map(Entry::op).filter_map(completed_payout).collect();
        let held_ids: HashSet<&str> = held.iter().map(|p| p.operation_id.as_str()).collect();
        let others: Vec<&CompletedPayout> =
            settled.iter().filter(|p| !held_ids.contains(p.operation_id.as_str())).collect();
        let mut added = Vec::new();
        for tx in txs.iter().filter(|t| is_keyless_payout(t)) {
            let ids: BTreeSet<&str> = held
                .iter()
                .chain(others.iter().copied())
                .filter(|p| repeats(tx, p))
                .map(|p| p.operation_id.as_str())
                .collect();
            let repeats_of: Vec<Option<String>> =
                if ids.is_empty() { vec![None] } else { ids.into_iter().map(|i| Some(i.to_string())).collect() };
            for r in repeats_of {
                added.push(Unclaimed { tx: tx.clone(), repeats: r, class: None });
            }
        }
        let completed_now: Vec<CompletedPayout> = self
            .ops
            .values()
            .filter(|e| e.became_completed_payout)
            .filter_map(Entry::op)
            .filter_map(completed_payout)
            .collect();
        if !completed_now.is_empty() {
            let mut held_keyless: BTreeMap<String, (Tx, BTreeSet<String>)> = BTreeMap::new();
            for e in self.unclaimed.iter().filter(|e| e.origin != Origin::New) {
                if let Subject::Unclaimed(u) = &e.subject
                    && is_keyless_payout(&u.tx)
                {
                    let slot =
                        held_keyless.entry(u.tx.tx_id.clone()).or_insert_with(|| (u.tx.clone(), BTreeSet::new()));
                    slot.1.extend(u.repeats.clone());
                }
            }
            for (tx_id, (tx, known)) in held_keyless {
                let fresh: Vec<&CompletedPayout> =
                    completed_now.iter().filter(|p| repeats(&tx, p) && !known.contains(&p.operation_id)).collect();
                if fresh.is_empty() {
                    continue;
                }
                // The row that said it repeats nothing goes; one row per payout it repeats comes.
                let before = self.unclaimed.len();
                self.unclaimed.retain(
                    |e| !matches!(&e.subject, Subject::Unclaimed(u) if u.tx.tx_id == tx_id && u.repeats.is_none()),
                );
                self.removed_unsettled |= self.unclaimed.len() != before;
                for p in fresh {
                    added.push(Unclaimed { tx: tx.clone(), repeats: Some(p.operation_id.clone()), class: None });
                }
            }
        }
        // A held pair whose payout has since recorded that very transaction as its outcome is no repeat: it
        // goes, and a transaction left repeating nothing keeps the one row that says so.
        let own: Vec<(String, String)> = self
            .ops
            .values()
            .filter(|e| e.log_tx_changed)
            .filter_map(Entry::op)
            .filter_map(completed_payout)
            .filter_map(|p| p.tx_id.map(|t| (t, p.operation_id)))
            .collect();
        for (tx_id, op) in own {
            let mut tx = None;
            let before = self.unclaimed.len();
            self.unclaimed.retain(|e| match &e.subject {
                Subject::Unclaimed(u) if u.tx.tx_id == tx_id && u.repeats.as_deref() == Some(op.as_str()) => {
                    tx = Some(u.tx.clone());
                    false
                }
                _ => true,
            });
            let Some(tx) = tx else { continue };
            self.removed_unsettled |= self.unclaimed.len() != before;
            let left =
                self.unclaimed.iter().any(|e| matches!(&e.subject, Subject::Unclaimed(u) if u.tx.tx_id == tx_id))
                    || added.iter().any(|u| u.tx.tx_id == tx_id);
            if !left {
                added.push(Unclaimed { tx, repeats: None, class: None });
            }
        }
        for u in added {
            self.unclaimed.push(Entry {
                subject: Subject::Unclaimed(u),
                row: None,
                origin: Origin::New,
                log_tx_changed: false,
                became_completed_payout: false,
            });
        }
    }

    /// How many operations the run holds (and so classifies).
    pub fn operations(&self) -> u64 {
        self.ops.len() as u64
    }

    /// Classify every operation and unclaimed transaction the run holds: the new and changed ones, and the
    /// unsettled ones, whose class may depend on the time (stale) or the namespace.
    pub fn classify(&mut self, stale_before: DateTime<Utc>, key_prefix: &str) {
        for e in self.ops.values_mut() {
            if let Subject::Operation(op) = &mut e.subject {
                op.class = classify(op, stale_before);
            }
        }
        for e in &mut self.unclaimed {
            if let Subject::Unclaimed(u) = &mut e.subject {
                u.class = classify_unclaimed(u, key_prefix);
            }
        }
    }

    /// The rows to write. A row whose content did not change keeps the versions it was stamped with.
    pub fn finish(self, v: Versions) -> Outcome {
        let mut out = Outcome { unsettled_changed: self.removed_unsettled, ..Outcome::default() };
        let mut placed: Vec<(ClassificationRow, Origin, bool)> = Vec::new();
        for e in self.ops.into_values().chain(self.unclaimed) {
            let fresh = e.subject.to_row(v);
            let (row, changed) = match &e.row {
                Some(old) if old.same_as(&fresh) => (old.clone(), false),
                _ => (fresh, true),
            };
            if changed && matches!(e.subject, Subject::Operation(_)) {
                out.changed_operations += 1;
            }
            let was = e.row.as_ref().and_then(|r| Subject::from_row(r).ok()).and_then(|s| s.matched());
            for (sign, m) in [(-1i64, was), (1, e.subject.matched())] {
                if let Some((day, kind, amount)) = m {
                    *out.matched.entry((day, kind.as_str())).or_default() += sign * amount.cents();
                }
            }
            if let Origin::File(f) = &e.origin
                && (changed || !row.settled)
            {
                out.rewritten_files.insert(f.clone());
            }
            if e.origin == Origin::Unsettled && (changed || row.settled) {
                out.unsettled_changed = true;
            }
            if e.origin != Origin::Unsettled && !row.settled {
                out.unsettled_changed = true;
            }
            placed.push((row, e.origin, changed));
        }
        out.matched.retain(|_, d| *d != 0);
        for (row, origin, _) in placed {
            if !row.settled {
                out.unsettled.push(row);
                continue;
            }
            let write = match &origin {
                Origin::File(f) => out.rewritten_files.contains(f),
                Origin::Unsettled | Origin::New => true,
            };
            if write {
                out.settled.push(row);
            }
        }
        out
    }
}
