//! Reconcile against the live provider's synced ledgers and escrow states (`purpleflea.ledger.entries`,
//! `purpleflea.agents.escrow_terms`, `purpleflea.ledger.gaps`, the wallets). The rows come from the
//! `live_*.sql` queries; the checks are pure ([`check`]), over exact micro-dollar amounts:
//!
//! - a completed payout's `pay_` id is one `payment_sent` debit of the logged amount (`missing_at_provider`,
//!   `amount_mismatch`, `duplicate_at_provider`); its `payment_received` credit, where the payee's ledger is
//!   held, is the logged payee's (`agent_mismatch`), and is there at all (`missing_at_provider`: the casino
//!   debits the payer and credits the payee in two database transactions, so a payment can be half made;
//!   concluded only where the payee's synced ledger is its whole history: from a zero balance, no gap);
//! - a completed escrow create's `<esc>_debit` is an `escrow_lock` debit of the logged amount;
//! - on a payer's ledger (an agent whose ledger holds a logged payout's or create's debit), every
//!   `payment_sent` or `escrow_lock` debit that no logged operation claims is `unlogged_at_provider` (a double
//!   payment, or money moved outside pfsync), unless an unknown operation names it as a candidate;
//! - escrows by state: a release credits the counterparty amount − commission and a referrer 15% of the
//!   commission; a timeout refund credits the creator amount − commission; a disputed (frozen) or still
//!   open escrow has paid nothing out; a logged release or dispute the escrow does not show is
//!   `status_mismatch`;
//! - unknown operations past `--stale-after-secs` are `stale_unknown`, with their candidate entries;
//! - balances through the chain: each wallet equals its agent's newest entry's `balance_after`
//!   (`balance_mismatch`), and every break of the chain, or gap a sync recorded, is `ledger_gap`.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};

use super::decode::decode_rows;
use super::matching::{LIVE_ESCROWS, LIVE_LEDGER_ENTRIES, LIVE_LEDGER_GAPS, LIVE_OPERATIONS, LIVE_WALLETS};
use super::{Class, Finding, ReconcileError};
use crate::ledger::rows::{LedgerEntryRow, LedgerGapRow};
use crate::micros::Micros;
use crate::money::Usd;
use crate::operation::OpKind;
use crate::payouts::log::LogEvent;
use crate::payouts::state::{Status, Summary};
use crate::sync::rows::{EscrowStatus, EscrowTermsRow, WalletRow};
use crate::tables::row::Text;

/// An operation of the payout log: what its events add up to through the one status machine.
pub type Op = Summary;

/// A synced ledger entry.
pub type Entry = LedgerEntryRow;

/// A live escrow's state and exact money.
pub type EscrowState = EscrowTermsRow;

/// A gap a sync recorded.
pub type GapRow = LedgerGapRow;

/// Everything the checks read.
#[derive(Debug, Clone, Default)]
pub struct LiveData {
    pub ops: Vec<Op>,
    pub entries: Vec<Entry>,
    pub escrows: Vec<EscrowState>,
    pub gaps: Vec<GapRow>,
    /// Wallet balances (the seed's DOUBLE column), by agent.
    pub wallets: Vec<(String, Option<f64>)>,
}

/// Every operation of the payout log, from its events (the rows of `live_operations.sql`).
pub fn operations(b: &[RecordBatch]) -> Result<Vec<Op>, ReconcileError> {
    let mut by_op: BTreeMap<String, Vec<LogEvent>> = BTreeMap::new();
    for e in decode_rows::<LogEvent>(&LIVE_OPERATIONS, b)? {
        by_op.entry(e.operation_id.clone()).or_default().push(e);
    }
    Ok(by_op.values().filter_map(|events| Summary::of(events)).collect())
}

pub fn entries(b: &[RecordBatch]) -> Result<Vec<Entry>, ReconcileError> {
    decode_rows(&LIVE_LEDGER_ENTRIES, b)
}

pub fn escrows(b: &[RecordBatch]) -> Result<Vec<EscrowState>, ReconcileError> {
    decode_rows(&LIVE_ESCROWS, b)
}

pub fn gaps(b: &[RecordBatch]) -> Result<Vec<GapRow>, ReconcileError> {
    decode_rows(&LIVE_LEDGER_GAPS, b)
}

pub fn wallets(b: &[RecordBatch]) -> Result<Vec<(String, Option<f64>)>, ReconcileError> {
    Ok(decode_rows::<WalletRow>(&LIVE_WALLETS, b)?.into_iter().map(|w| (w.agent_id, w.balance_usd)).collect())
}

/// What the checks found: findings (one per key), and operations per class.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub op_classes: BTreeMap<&'static str, u64>,
    pub operations: u64,
    pub matched: Usd,
}

/// An amount for the reconciliation table's DECIMAL(18,2) columns: only when it is whole cents (the
/// exact value is always in the detail).
fn cents(m: Micros) -> Option<Usd> {
    m.to_usd_exact()
}

/// 15% of a commission, as the escrow service computes it (rounded to six decimals).
fn referral_share(commission: Micros) -> Micros {
    let raw = commission.raw() as i128 * 15;
    let rounded = (raw + if raw >= 0 { 50 } else { -50 }) / 100;
    Micros::from_raw(rounded as i64).unwrap_or(Micros::ZERO)
}

/// The wallet's DOUBLE (the seed's column) back to micro-dollars without float arithmetic: its shortest
/// decimal text, which is the micro-dollar value it was written from (`micros / 10^6` is the double
/// closest to it), parsed exactly.
fn wallet_micros(balance: f64) -> Option<Micros> {
    balance.is_finite().then(|| Micros::parse(&format!("{balance}")).ok()).flatten()
}

struct Findings {
    out: Vec<Finding>,
    keys: HashSet<String>,
}

impl Findings {
    fn push(&mut self, f: Finding) {
        if self.keys.insert(f.key()) {
            self.out.push(f);
        }
    }
}

fn op_finding(class: Class, op: &Op, detail: String) -> Finding {
    Finding {
        operation_id: Some(op.operation_id.clone()),
        kind: Some(op.kind.as_str().to_string()),
        tx_ids: op.tx_id.clone(),
        agent_id: op.agent_id.clone(),
        expected_agent: op.agent_id.clone(),
        expected_amount: op.amount_usd,
        ..Finding::new(class, detail)
    }
}

/// The pure checks. `stale_before`: an operation with no final outcome recorded before it is stale.
pub fn check(data: &LiveData, stale_before: DateTime<Utc>) -> Outcome {
    let mut f = Findings { out: Vec::new(), keys: HashSet::new() };
    let mut out = Outcome::default();
    let by_id: HashMap<&str, &Entry> = data.entries.iter().map(|e| (e.entry_id.as_str(), e)).collect();
    let mut by_ref: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for e in &data.entries {
        if let Some(r) = &e.reference {
            by_ref.entry(r.as_str()).or_default().push(e);
        }
    }
    let held: HashSet<&str> = data.entries.iter().map(|e| e.agent_id.as_str()).collect();
    // Entries logged operations account for, and the ledgers pfsync pays from.
    let mut claimed: HashSet<&str> = HashSet::new();
    let mut payers: HashSet<&str> = HashSet::new();

    // Agents whose synced ledger is their whole history: its chain starts from a zero balance (a first sync
    // of a full window starts later) and no sync recorded a gap. Only there does a missing credit prove
    // anything.
    let gapped: HashSet<&str> = data.gaps.iter().map(|g| g.agent_id.as_str()).collect();
    let mut first: HashMap<&str, &Entry> = HashMap::new();
    for e in &data.entries {
        let slot = first.entry(e.agent_id.as_str()).or_insert(e);
        if e.ledger_seq < slot.ledger_seq {
            *slot = e;
        }
    }
    let whole: HashSet<&str> = first
        .iter()
        .filter(|(a, e)| !gapped.contains(*a) && e.balance_before() == Some(Micros::ZERO))
        .map(|(a, _)| *a)
        .collect();
    let classes: Vec<Class> = data
        .ops
        .iter()
        .map(|op| {
            let ledgers = Ledgers { by_id: &by_id, by_ref: &by_ref, whole: &whole };
            classify_op(op, &ledgers, stale_before, &mut claimed, &mut payers, &mut f)
        })
        .collect();

    // What unknown operations name as candidates is theirs to resolve (stale_unknown shows them), not unlogged.
    let unknown_text: Vec<&str> =
        data.ops.iter().filter(|o| !o.status.is_final()).filter_map(|o| o.error_message.as_deref()).collect();
    let named_by_unknown = |e: &Entry| {
        let r = e.reference.as_deref().unwrap_or(&e.entry_id);
        unknown_text.iter().any(|t| t.contains(r))
    };
    for e in data.entries.iter().filter(|e| payers.contains(e.agent_id.as_str()) && e.is_debit()) {
        let pays = e.reason == "payment_sent";
        let locks = e.reason.starts_with("escrow_lock: ");
        if !(pays || locks) || claimed.contains(e.entry_id.as_str()) || named_by_unknown(e) {
            continue;
        }
        let reference = e.reference.clone().unwrap_or_else(|| e.entry_id.clone());
        let payee = e
            .reference
            .as_deref()
            .and_then(|r| by_ref.get(r))
            .and_then(|v| v.iter().find(|c| !c.is_debit()).map(|c| c.agent_id.clone()));
        let same: Vec<&str> = data
            .ops
            .iter()
            .filter(|o| o.is_completed() && o.amount_usd.map(Micros::from_usd) == Some(e.amount_usd))
            .filter(|o| payee.is_none() || o.agent_id == payee)
            .map(|o| o.operation_id.as_str())
            .collect();
        let twin = if same.is_empty() {
            String::new()
        } else {
            format!(
                "; logged operations of the same amount{}: {} (a double payment?)",
                if payee.is_some() { " and payee" } else { "" },
                same.join(", ")
            )
        };
        f.push(Finding {
            kind: Some(e.reason.clone()),
            tx_ids: Some(reference.clone()),
            agent_id: Some(e.agent_id.clone()),
            actual_agent: payee.clone(),
            actual_amount: cents(e.amount_usd),
            ..Finding::new(
                Class::UnloggedAtProvider,
                format!(
                    "{} debit {reference} of {} on {}'s ledger{} is claimed by no logged operation{twin}",
                    e.reason,
                    e.amount_usd,
                    e.agent_id,
                    payee.as_deref().map(|p| format!(" (to {p})")).unwrap_or_default()
                ),
            )
        });
    }

    for esc in &data.escrows {
        check_escrow(esc, &data.ops, &by_id, &held, &mut f);
    }
    check_balances(data, &held, &mut f);
    for g in &data.gaps {
        f.push(gap_finding(&g.agent_id, &g.after_entry_id, &g.before_entry_id, g.detail.clone()));
    }
    // Each operation in one class: a finding about it (a release the escrow does not show) wins.
    let found: HashMap<&str, Class> =
        f.out.iter().filter_map(|x| x.operation_id.as_deref().map(|o| (o, x.class))).collect();
    for (op, class) in data.ops.iter().zip(classes) {
        let class = found.get(op.operation_id.as_str()).copied().unwrap_or(class);
        out.operations += 1;
        *out.op_classes.entry(class.as_str()).or_default() += 1;
        if class == Class::Matched
            && op.is_completed()
            && let Some(a) = op.amount_usd
        {
            out.matched = out.matched.checked_add(a).unwrap_or(out.matched);
        }
    }
    out.findings = f.out;
    out
}

fn gap_finding(agent: &str, after: &str, before: &str, detail: String) -> Finding {
    Finding {
        tx_ids: Some(format!("{after},{before}")),
        agent_id: Some(agent.to_string()),
        ..Finding::new(Class::LedgerGap, detail)
    }
}

/// The synced ledgers, indexed: entries by id and by reference, and the agents whose copy is whole.
struct Ledgers<'l, 'a> {
    by_id: &'l HashMap<&'a str, &'a Entry>,
    by_ref: &'l HashMap<&'a str, Vec<&'a Entry>>,
    whole: &'l HashSet<&'a str>,
}

fn classify_op<'a>(
    op: &'a Op,
    ledgers: &Ledgers<'_, 'a>,
    stale_before: DateTime<Utc>,
    claimed: &mut HashSet<&'a str>,
    payers: &mut HashSet<&'a str>,
    f: &mut Findings,
) -> Class {
    match op.status {
        // Nothing was to move (refused, or a person decided it is not to be paid): an entry that did move
        // stays unclaimed and is reported as such.
        Status::Rejected { .. } | Status::Abandoned => return Class::Matched,
        // A person found the attempt never ran: the next run sends it again.
        Status::NeverRan { .. } => return Class::InProgress,
        Status::Unknown { .. } | Status::InFlight { .. } if op.last_recorded_at < stale_before => {
            let candidates = op.error_message.as_deref().unwrap_or("none recorded");
            f.push(op_finding(
                Class::StaleUnknown,
                op,
                format!(
                    "the outcome of {} {} is unknown since {}; a person must decide from the candidate ledger \
                     entries: {candidates}",
                    op.kind.as_str(),
                    op.operation_id,
                    op.last_recorded_at
                ),
            ));
            return Class::StaleUnknown;
        }
        Status::Unknown { .. } | Status::InFlight { .. } => return Class::InProgress,
        Status::New | Status::Completed { .. } => {}
    }
    let Ledgers { by_id, by_ref, whole } = *ledgers;
    let expected = op.amount_usd.map(Micros::from_usd);
    let tx = op.tx_id.as_deref();
    let (class, detail) = match (op.kind, tx) {
        (OpKind::Payout, Some(tx)) => {
            let hits: Vec<&Entry> = by_ref
                .get(tx)
                .map(|v| v.iter().copied().filter(|e| e.is_debit() && e.reason == "payment_sent").collect())
                .unwrap_or_default();
            for e in &hits {
                claimed.insert(e.entry_id.as_str());
                payers.insert(e.agent_id.as_str());
            }
            let credit =
                by_ref.get(tx).and_then(|v| v.iter().find(|e| !e.is_debit() && e.reason == "payment_received"));
            match hits.as_slice() {
                [] => (Class::MissingAtProvider, format!("no payment_sent debit {tx} in the synced ledgers")),
                [e] if Some(e.amount_usd) != expected => (
                    Class::AmountMismatch,
                    format!("payment_sent debit {tx} is {}, the log says {:?}", e.amount_usd, op.amount_usd),
                ),
                [_] => match credit {
                    Some(c) if op.agent_id.as_deref() != Some(c.agent_id.as_str()) => (
                        Class::AgentMismatch,
                        format!("payment {tx} was received by {}, the log says {:?}", c.agent_id, op.agent_id),
                    ),
                    Some(_) => (Class::Matched, String::new()),
                    None if op.agent_id.as_deref().is_some_and(|a| whole.contains(a)) => (
                        Class::MissingAtProvider,
                        format!(
                            "the payer was debited ({tx}) but the payee's synced ledger holds no payment_received \
                             credit for it: the payee was never paid (the casino debits and credits in two steps)"
                        ),
                    ),
                    // The payee's ledger is not held, or has a gap: nothing to conclude from its absence.
                    None => (Class::Matched, String::new()),
                },
                many => (Class::DuplicateAtProvider, format!("{} payment_sent debits carry {tx}", many.len())),
            }
        }
        (OpKind::EscrowCreate, Some(tx)) => match by_id.get(tx) {
            None => (Class::MissingAtProvider, format!("no escrow_lock debit {tx} in the synced ledgers")),
            Some(e) => {
                claimed.insert(e.entry_id.as_str());
                payers.insert(e.agent_id.as_str());
                if Some(e.amount_usd) != expected {
                    (
                        Class::AmountMismatch,
                        format!("escrow_lock debit {tx} is {}, the log says {:?}", e.amount_usd, op.amount_usd),
                    )
                } else {
                    (Class::Matched, String::new())
                }
            }
        },
        (OpKind::Payout | OpKind::EscrowCreate, None) => {
            (Class::MissingAtProvider, "completed without a provider transaction id in the log".to_string())
        }
        // Releases and disputes are checked against the escrow's state (`check_escrow`).
        _ => (Class::Matched, String::new()),
    };
    if class != Class::Matched {
        let mut finding = op_finding(class, op, detail);
        if let Some(e) = tx.and_then(|t| by_id.get(t).or_else(|| by_ref.get(t).and_then(|v| v.first()))) {
            finding.actual_amount = cents(e.amount_usd);
            finding.actual_agent = Some(e.agent_id.clone());
        }
        f.push(finding);
    }
    class
}

fn check_escrow(esc: &EscrowState, ops: &[Op], by_id: &HashMap<&str, &Entry>, held: &HashSet<&str>, f: &mut Findings) {
    let id = esc.escrow_id.as_str();
    let entry = |suffix: &str| by_id.get(format!("{id}_{suffix}").as_str()).copied();
    let esc_finding =
        |class: Class, agent: &str, expected: Option<Micros>, actual: Option<Micros>, detail: String| Finding {
            kind: Some(format!("escrow_{}", esc.status.as_str())),
            tx_ids: Some(id.to_string()),
            agent_id: Some(agent.to_string()),
            expected_amount: expected.and_then(cents),
            actual_amount: actual.and_then(cents),
            ..Finding::new(class, detail)
        };
    // Logged releases and disputes the escrow does not show.
    for op in ops.iter().filter(|o| o.is_completed() && o.escrow_id.as_deref() == Some(id)) {
        let want = match op.kind {
            OpKind::EscrowRelease => EscrowStatus::Released,
            OpKind::EscrowDispute => EscrowStatus::Disputed,
            _ => continue,
        };
        if esc.status != want {
            f.push(op_finding(
                Class::StatusMismatch,
                op,
                format!("the log completed {} of escrow {id}, which is {}", op.kind.as_str(), esc.status.as_str()),
            ));
        }
    }
    let (release, refcom, refund) = (entry("release_credit"), entry("refcom_credit"), entry("timeout_credit"));
    // An amount credit of `what` to `agent`, checked only where that agent's ledger is held.
    let mut expect = |what: &str, agent: &str, got: Option<&Entry>, want: Micros| match got {
        None if held.contains(agent) => f.push(esc_finding(
            Class::MissingAtProvider,
            agent,
            Some(want),
            None,
            format!("escrow {id} is {}: no {what} of {want} on {agent}'s ledger", esc.status.as_str()),
        )),
        Some(e) if e.amount_usd != want || e.agent_id != agent => f.push(esc_finding(
            Class::AmountMismatch,
            agent,
            Some(want),
            Some(e.amount_usd),
            format!(
                "escrow {id} ({} less commission {}): {what} {} of {} to {}, expected {want} to {agent}",
                esc.amount_usd, esc.commission_usd, e.entry_id, e.amount_usd, e.agent_id
            ),
        )),
        _ => {}
    };
    match esc.status {
        EscrowStatus::Released => {
            expect("release credit", &esc.counterparty_agent_id, release, esc.net_to_counterparty_usd);
            if let Some(r) = refcom {
                let share = referral_share(esc.commission_usd);
                let agent = r.agent_id.clone();
                expect("referral commission", &agent, Some(r), share);
            }
        }
        EscrowStatus::Refunded => expect("timeout refund", &esc.creator_agent_id, refund, esc.net_to_counterparty_usd),
        status => {
            // Disputed (frozen), funded or completed: nothing has been paid out of it.
            let paid: Vec<&Entry> = [release, refcom, refund].into_iter().flatten().collect();
            if !paid.is_empty() {
                let ids: Vec<&str> = paid.iter().map(|e| e.entry_id.as_str()).collect();
                f.push(esc_finding(
                    Class::StatusMismatch,
                    &esc.creator_agent_id,
                    None,
                    Some(paid[0].amount_usd),
                    format!("escrow {id} is {}, yet its money was paid out: {}", status.as_str(), ids.join(", ")),
                ));
            }
        }
    }
}

fn check_balances(data: &LiveData, held: &HashSet<&str>, f: &mut Findings) {
    let mut chains: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &data.entries {
        chains.entry(e.agent_id.as_str()).or_default().push(e);
    }
    for chain in chains.values_mut() {
        chain.sort_by_key(|e| e.ledger_seq);
        for w in chain.windows(2) {
            if w[1].balance_before() != Some(w[0].balance_after_usd) {
                f.push(gap_finding(
                    &w[0].agent_id,
                    &w[0].entry_id,
                    &w[1].entry_id,
                    format!(
                        "the synced ledger's balance chain breaks: {} leaves {}, the next entry {} starts from {}",
                        w[0].entry_id,
                        w[0].balance_after_usd,
                        w[1].entry_id,
                        w[1].balance_before().map(|m| m.to_string()).unwrap_or_else(|| "?".into())
                    ),
                ));
            }
        }
    }
    for (agent, balance) in &data.wallets {
        let (Some(chain), true) = (chains.get(agent.as_str()), held.contains(agent.as_str())) else { continue };
        let Some(newest) = chain.last() else { continue };
        let wallet = balance.and_then(wallet_micros);
        if wallet != Some(newest.balance_after_usd) {
            f.push(Finding {
                agent_id: Some(agent.clone()),
                tx_ids: None,
                expected_amount: cents(newest.balance_after_usd),
                actual_amount: wallet.and_then(cents),
                ..Finding::new(
                    Class::BalanceMismatch,
                    format!(
                        "the wallet shows {}, the newest synced ledger entry {} leaves {}: entries were written \
                         between the wallet and ledger syncs, or the copy is incomplete",
                        wallet.map(|m| m.to_string()).unwrap_or_else(|| "no balance".into()),
                        newest.entry_id,
                        newest.balance_after_usd
                    ),
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rows::EntryType;

    fn m(s: &str) -> Micros {
        Micros::parse(s).unwrap()
    }

    /// An entry: its id, agent, type, (amount, balance after), reason, reference ("" for none) and seq.
    fn entry(
        id: &str,
        agent: &str,
        kind: &str,
        (amount, after): (&str, &str),
        reason: &str,
        r: &str,
        seq: i64,
    ) -> Entry {
        let at = DateTime::UNIX_EPOCH;
        Entry {
            entry_id: id.into(),
            agent_id: agent.into(),
            r#type: <EntryType as Text>::parse(kind).unwrap(),
            amount_usd: m(amount),
            balance_after_usd: m(after),
            reason: reason.into(),
            reference: (!r.is_empty()).then(|| r.to_string()),
            service: None,
            created_at: at,
            ledger_seq: seq,
            created_date: at.date_naive(),
            synced_at: at,
        }
    }

    fn op(id: &str, kind: &str, agent: &str, amount: Option<&str>, tx: Option<&str>, esc: Option<&str>) -> Op {
        Op {
            operation_id: id.into(),
            kind: OpKind::parse(kind).unwrap(),
            status: Status::Completed { tx_id: tx.map(str::to_string), escrow_id: esc.map(str::to_string) },
            attempts: 1,
            agent_id: Some(agent.into()),
            counterparty_agent_id: None,
            amount_usd: amount.map(|a| Usd::parse(a).unwrap()),
            tx_id: tx.map(str::to_string),
            escrow_id: esc.map(str::to_string),
            error_code: None,
            error_message: None,
            last_recorded_at: Utc::now(),
        }
    }

    fn classes(o: &Outcome) -> Vec<(Class, Option<&str>, Option<&str>)> {
        o.findings.iter().map(|f| (f.class, f.operation_id.as_deref(), f.tx_ids.as_deref())).collect()
    }

    /// The payer P pays A 1.50 (logged), creates escrow e1 of 12.34 for A (logged) and releases it.
    fn world() -> LiveData {
        LiveData {
            ops: vec![
                op("p1", "payout", "ag_a", Some("1.50"), Some("pay_1"), None),
                op("c1", "escrow_create", "ag_p", Some("12.34"), Some("e1_debit"), Some("e1")),
                op("r1", "escrow_release", "ag_a", None, Some("e1_release"), Some("e1")),
            ],
            entries: vec![
                entry("f", "ag_p", "credit", ("100", "100"), "deposit", "", 1),
                entry("d1", "ag_p", "debit", ("1.5", "98.5"), "payment_sent", "pay_1", 2),
                entry("e1_debit", "ag_p", "debit", ("12.34", "86.16"), "escrow_lock: e1", "e1", 3),
                entry("c1", "ag_a", "credit", ("1.5", "1.5"), "payment_received", "pay_1", 1),
                entry(
                    "e1_release_credit",
                    "ag_a",
                    "credit",
                    ("12.2166", "13.7166"),
                    "escrow_release: e1",
                    "e1_release",
                    2,
                ),
            ],
            escrows: vec![EscrowState {
                escrow_id: "e1".into(),
                creator_agent_id: "ag_p".into(),
                counterparty_agent_id: "ag_a".into(),
                status: EscrowStatus::Released,
                amount_usd: m("12.34"),
                commission_usd: m("0.1234"),
                net_to_counterparty_usd: m("12.2166"),
                timeout_hours: 24,
                created_at: DateTime::UNIX_EPOCH,
                auto_release_at: DateTime::UNIX_EPOCH,
                completed_at: None,
                released_at: None,
                disputed_at: None,
                last_synced_at: None,
            }],
            gaps: vec![],
            wallets: vec![("ag_p".into(), Some(86.16)), ("ag_a".into(), Some(13.7166))],
        }
    }

    #[test]
    fn a_consistent_world_has_no_finding() {
        let o = check(&world(), Utc::now() - chrono::Duration::hours(1));
        assert_eq!(classes(&o), []);
        assert_eq!((o.operations, o.op_classes.get("matched").copied()), (3, Some(3)));
        assert_eq!(referral_share(m("0.1234")), m("0.01851"));
    }

    #[test]
    fn a_double_payment_a_short_release_a_paid_dispute_a_balance_and_a_break_are_found() {
        let mut w = world();
        // The same 1.50 to A again, outside pfsync.
        w.entries.push(entry("d2", "ag_p", "debit", ("1.5", "84.66"), "payment_sent", "pay_2", 4));
        w.entries.push(entry("c2", "ag_a", "credit", ("1.5", "15.2166"), "payment_received", "pay_2", 3));
        w.wallets = vec![("ag_p".into(), Some(84.66)), ("ag_a".into(), Some(15.0))];
        // The release credited less than amount - commission.
        w.entries[4].amount_usd = m("12.2");
        w.entries[4].balance_after_usd = m("13.7");
        w.entries[6].balance_after_usd = m("15.2");
        // A disputed escrow that paid out, and a broken chain on A's ledger.
        w.escrows.push(EscrowState { escrow_id: "e2".into(), status: EscrowStatus::Disputed, ..w.escrows[0].clone() });
        w.entries.push(entry(
            "e2_release_credit",
            "ag_a",
            "credit",
            ("1", "99"),
            "escrow_release: e2",
            "e2_release",
            4,
        ));
        let o = check(&w, Utc::now() - chrono::Duration::hours(1));
        let found = classes(&o);
        assert!(found.contains(&(Class::UnloggedAtProvider, None, Some("pay_2"))), "{found:?}");
        assert!(o.findings.iter().any(|f| f.class == Class::UnloggedAtProvider && f.detail.contains("p1")));
        assert!(found.contains(&(Class::AmountMismatch, None, Some("e1"))), "{found:?}");
        assert!(found.contains(&(Class::StatusMismatch, None, Some("e2"))), "{found:?}");
        assert!(found.contains(&(Class::LedgerGap, None, Some("c2,e2_release_credit"))), "{found:?}");
        assert!(found.iter().any(|f| f.0 == Class::BalanceMismatch), "{found:?}");
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn a_payment_debited_but_never_credited_is_missing_unless_a_gap_could_hide_the_credit() {
        let mut w = world();
        // The payer's debit stands; the payee's credit never happened (its chain starts at the release).
        w.entries.retain(|e| e.entry_id != "c1");
        w.entries[3].balance_after_usd = m("12.2166");
        w.wallets[1].1 = Some(12.2166);
        let o = check(&w, Utc::now() - chrono::Duration::hours(1));
        let found = classes(&o);
        assert_eq!(found, [(Class::MissingAtProvider, Some("p1"), Some("pay_1"))], "{found:?}");
        assert!(o.findings[0].detail.contains("never paid"), "{}", o.findings[0].detail);
        // A recorded gap on the payee's ledger: the credit may be in it, so only the gap is reported.
        w.gaps.push(GapRow {
            agent_id: "ag_a".into(),
            kind: crate::ledger::chain::GapKind::WindowFull,
            after_entry_id: String::new(),
            after_balance_usd: Micros::ZERO,
            before_entry_id: "e1_release_credit".into(),
            before_balance_usd: Micros::ZERO,
            detail: "window full".into(),
            run_id: "r".into(),
            detected_at: DateTime::UNIX_EPOCH,
        });
        let o = check(&w, Utc::now() - chrono::Duration::hours(1));
        let found = classes(&o);
        assert!(found.iter().all(|f| f.0 != Class::MissingAtProvider), "{found:?}");
        // A payee's copy that starts after its history began (a first sync of a full window): no conclusion.
        w.gaps.clear();
        w.entries[3].balance_after_usd = m("13.7166");
        w.wallets[1].1 = Some(13.7166);
        let o = check(&w, Utc::now() - chrono::Duration::hours(1));
        let found = classes(&o);
        assert!(found.iter().all(|f| f.0 != Class::MissingAtProvider), "{found:?}");
        // The payee's ledger not held at all: nothing to conclude.
        w.gaps.clear();
        w.entries.retain(|e| e.agent_id != "ag_a");
        w.wallets.truncate(1);
        let o = check(&w, Utc::now() - chrono::Duration::hours(1));
        let found = classes(&o);
        assert!(found.iter().all(|f| f.0 != Class::MissingAtProvider), "{found:?}");
    }
}
