//! A person's decision about an operation pfsync could not settle (`pfsync resolve`): which operations need
//! one, the provider's evidence as pfsync's copies hold it, whether a decision may be recorded, and the log
//! event that records it. Pure: the command (`app/resolve.rs`) reads the tables and commits the event.
//!
//! Where the evidence comes from follows from the log, never from a provider's name: an operation that
//! names the agent it debits (`payer_agent_id`, a provider that pays from an agent's balance) is looked for
//! in that agent's copied ledger (`purpleflea.ledger.entries`, with `purpleflea.ledger.gaps`); any other in
//! the synced transactions (`purpleflea.ledger.transactions`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};

use super::event::{Event, LogEvent};
use super::state::{Status, Summary, last_intent_at, status};
use crate::ledger::rows::{LedgerEntryRow, LedgerGapRow};
use crate::micros::Micros;
use crate::operation::OpKind;
use crate::provider::records::TxKind;
use crate::sync::rows::TransactionRow;

/// How far before the first intent the evidence window reaches: the intent's time is pfsync's clock, an
/// entry's the provider's.
pub const WINDOW_SKEW_SECS: i64 = 120;

/// What a person decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It ran, and this provider reference is what it made.
    Completed { tx: String },
    /// The latest attempt never ran: the next payouts run sends the next attempt.
    NeverRan,
    /// Not to be paid: final, nothing is sent.
    Abandoned,
}

impl Decision {
    pub fn event(&self) -> Event {
        match self {
            Decision::Completed { .. } => Event::Completed,
            Decision::NeverRan => Event::NeverRan,
            Decision::Abandoned => Event::Abandoned,
        }
    }
}

/// Why a decision is not recorded. Each is the person's to act on (exit 2), never retried by itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("operation {0} is not in the payout log")]
    NotLogged(String),
    #[error("operation {id} is already final ({status}): nothing to decide")]
    Final { id: String, status: &'static str },
    #[error(
        "operation {id}: attempt {attempt} was sent {age_secs} s ago and a run may still be sending it (in-flight \
         timeout {timeout_secs} s): decide after the timeout"
    )]
    InFlight { id: String, attempt: i32, age_secs: i64, timeout_secs: i64 },
    #[error("operation {id}: attempt {attempt} is already recorded as never ran; the next payouts run sends it")]
    AlreadyNeverRan { id: String, attempt: i32 },
    #[error("operation {id}: {reference} is not in {copy} (sync it first if it is new: `pfsync sync transactions`)")]
    NoSuchReference { id: String, reference: String, copy: &'static str },
    #[error("operation {id}: {reference} does not fit it: {why}")]
    DoesNotFit { id: String, reference: String, why: String },
    #[error("operation {id}: {reference} is already the outcome of operation {other}")]
    Claimed { id: String, reference: String, other: String },
    #[error("operation {id}: a {kind} is recorded completed only from {what}")]
    Unsupported { id: String, kind: &'static str, what: &'static str },
    #[error(
        "operation {id} changed while the decision was made (a payouts run recorded {what}); look at it again with \
         `pfsync resolve`"
    )]
    Changed { id: String, what: String },
}

/// Does this operation wait for a person: its outcome unknown, or its latest intent unanswered past the
/// in-flight timeout (the run that sent it died)?
pub fn needs_person(events: &[LogEvent], now: DateTime<Utc>, in_flight_timeout: Duration) -> bool {
    match status(events) {
        Status::Unknown { .. } => true,
        Status::InFlight { .. } => last_intent_at(events).is_some_and(|at| now - at >= in_flight_timeout),
        _ => false,
    }
}

/// May `decision` be recorded for an operation with these events?
pub fn check_decidable(
    id: &str,
    events: &[LogEvent],
    decision: &Decision,
    now: DateTime<Utc>,
    in_flight_timeout: Duration,
) -> Result<i32, Refusal> {
    let st = status(events);
    if let Some(name) = st.name().filter(|_| st.is_final()) {
        use crate::tables::row::Text;
        return Err(Refusal::Final { id: id.into(), status: name.as_str() });
    }
    match st {
        Status::New => Err(Refusal::NotLogged(id.into())),
        Status::InFlight { attempt } => {
            let at = last_intent_at(events).unwrap_or(now);
            if now - at < in_flight_timeout {
                return Err(Refusal::InFlight {
                    id: id.into(),
                    attempt,
                    age_secs: (now - at).num_seconds(),
                    timeout_secs: in_flight_timeout.num_seconds(),
                });
            }
            Ok(attempt)
        }
        Status::NeverRan { attempt } if *decision == Decision::NeverRan => {
            Err(Refusal::AlreadyNeverRan { id: id.into(), attempt })
        }
        Status::NeverRan { attempt } | Status::Unknown { attempt } => Ok(attempt),
        Status::Completed { .. } | Status::Rejected { .. } | Status::Abandoned => unreachable_final(id),
    }
}

/// Final statuses were refused above; kept total without a panic.
fn unreachable_final(id: &str) -> Result<i32, Refusal> {
    Err(Refusal::Final { id: id.into(), status: "final" })
}

/// Which operation claims each provider reference (`tx_id` of its `completed` events).
pub fn claims(events: &[LogEvent]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for e in events.iter().filter(|e| e.event == Event::Completed) {
        if let Some(tx) = &e.tx_id {
            let ops = out.entry(tx.clone()).or_default();
            if !ops.contains(&e.operation_id) {
                ops.push(e.operation_id.clone());
            }
        }
    }
    out
}

/// The other operation that claims `reference`, if any.
fn claimed_by(claims: &HashMap<String, Vec<String>>, reference: &str, id: &str) -> Option<String> {
    claims.get(reference).and_then(|ops| ops.iter().find(|o| o.as_str() != id).cloned())
}

/// What a person needs to know about one operation, from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub summary: Summary,
    /// The agent the operation debits, where the log names one.
    pub payer: Option<String>,
    pub first_intent_at: Option<DateTime<Utc>>,
    pub last_intent_at: Option<DateTime<Utc>>,
    /// The distinct error messages its attempts logged, oldest attempt first.
    pub messages: Vec<String>,
}

impl Case {
    pub fn of(events: &[LogEvent]) -> Option<Case> {
        let summary = Summary::of(events)?;
        let mut by_attempt: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for e in events {
            let text = match (&e.error_code, &e.error_message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => continue,
            };
            let at = by_attempt.entry(e.attempt).or_default();
            if !at.contains(&text) {
                at.push(text);
            }
        }
        Some(Case {
            payer: events.iter().filter_map(|e| e.payer_agent_id.clone()).max(),
            first_intent_at: events.iter().filter(|e| e.event == Event::Intent).map(|e| e.recorded_at).min(),
            last_intent_at: last_intent_at(events),
            messages: by_attempt.into_values().flatten().collect(),
            summary,
        })
    }

    /// Where the evidence window starts: the first intent, less the skew allowance.
    pub fn window_from(&self) -> Option<DateTime<Utc>> {
        self.first_intent_at.map(|t| t - Duration::seconds(WINDOW_SKEW_SECS))
    }

    fn amount(&self) -> Option<Micros> {
        self.summary.amount_usd.map(Micros::from_usd)
    }
}

/// A provider record that may be the operation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What `completed --tx` takes: a payment's reference, a lock entry's id, a transaction id.
    pub reference: String,
    /// The ledger entry's reason, or the transaction's kind.
    pub what: String,
    pub amount: String,
    pub at: DateTime<Utc>,
    /// The agent credited, where the record (or its credit entry in a held ledger) names one.
    pub payee: Option<String>,
    /// Another operation whose `completed` already names this reference.
    pub claimed_by: Option<String>,
}

/// The provider's records as pfsync's copies hold them.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The ledger copy's entries of the agents concerned (payers and payees).
    pub entries: Vec<LedgerEntryRow>,
    pub gaps: Vec<LedgerGapRow>,
    pub transactions: Vec<TransactionRow>,
}

/// Which copy an operation's evidence is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The payer's copied ledger.
    Ledger,
    /// The synced provider transactions.
    Transactions,
}

impl Source {
    pub fn of(case: &Case) -> Source {
        if case.payer.is_some() { Source::Ledger } else { Source::Transactions }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Source::Ledger => "the payer's ledger copy (purpleflea.ledger.entries)",
            Source::Transactions => "the synced provider transactions (purpleflea.ledger.transactions)",
        }
    }
}

/// The ledger debit an operation of this kind writes at its payer.
fn is_debit_of(kind: OpKind, e: &LedgerEntryRow) -> bool {
    e.is_debit()
        && match kind {
            OpKind::Payout => e.reason == "payment_sent",
            OpKind::EscrowCreate => e.reason.starts_with("escrow_lock"),
            OpKind::EscrowRelease | OpKind::EscrowDispute => false,
        }
}

/// The reference a person names for a debit: a payment's `pay_` reference, a lock's entry id (what the
/// engine logs as the tx id of each).
fn debit_reference(kind: OpKind, e: &LedgerEntryRow) -> String {
    match kind {
        OpKind::Payout => e.reference.clone().unwrap_or_else(|| e.entry_id.clone()),
        _ => e.entry_id.clone(),
    }
}

/// The agent a payment credited, where the payee's ledger is held.
fn payee_of(entries: &[LedgerEntryRow], reference: &str, payer: &str) -> Option<String> {
    entries
        .iter()
        .find(|c| {
            !c.is_debit()
                && c.reason == "payment_received"
                && c.reference.as_deref() == Some(reference)
                && c.agent_id != payer
        })
        .map(|c| c.agent_id.clone())
}

/// The provider transaction kind an operation makes.
pub fn tx_kind(kind: OpKind) -> TxKind {
    match kind {
        OpKind::Payout => TxKind::Payout,
        OpKind::EscrowCreate => TxKind::EscrowLock,
        OpKind::EscrowRelease => TxKind::EscrowRelease,
        OpKind::EscrowDispute => TxKind::EscrowRefund,
    }
}

/// The records since the window's start that are of the operation's kind and amount (and payee, where a
/// transaction names it): what a person compares.
pub fn candidates(case: &Case, ev: &Evidence, claims: &HashMap<String, Vec<String>>) -> Vec<Candidate> {
    let s = &case.summary;
    let from = case.window_from().unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut out: Vec<Candidate> = match Source::of(case) {
        Source::Ledger => {
            let payer = case.payer.as_deref().unwrap_or_default();
            ev.entries
                .iter()
                .filter(|e| e.agent_id == payer && e.created_at >= from && is_debit_of(s.kind, e))
                .filter(|e| Some(e.amount_usd) == case.amount())
                .map(|e| {
                    let reference = debit_reference(s.kind, e);
                    let payee = match s.kind {
                        OpKind::Payout => payee_of(&ev.entries, &reference, payer),
                        _ => None,
                    };
                    Candidate {
                        claimed_by: claimed_by(claims, &reference, &s.operation_id),
                        reference,
                        what: e.reason.clone(),
                        amount: e.amount_usd.to_string(),
                        at: e.created_at,
                        payee,
                    }
                })
                .collect()
        }
        Source::Transactions => ev
            .transactions
            .iter()
            .filter(|t| t.kind == tx_kind(s.kind) && t.created_at >= from)
            .filter(|t| match s.kind {
                OpKind::Payout | OpKind::EscrowCreate => {
                    Some(t.amount_usd) == s.amount_usd && s.agent_id.as_deref() == Some(t.agent_id.as_str())
                }
                OpKind::EscrowRelease | OpKind::EscrowDispute => s.escrow_id.is_none() || t.reference == s.escrow_id,
            })
            .map(|t| Candidate {
                claimed_by: claimed_by(claims, &t.tx_id, &s.operation_id),
                reference: t.tx_id.clone(),
                what: t.kind.as_str().to_string(),
                amount: t.amount_usd.to_string(),
                at: t.created_at,
                payee: Some(t.agent_id.clone()),
            })
            .collect(),
    };
    out.sort_by(|a, b| (a.at, &a.reference).cmp(&(b.at, &b.reference)));
    out
}

/// The gaps of the payer's ledger copy that may hide a debit of the window: recorded after it started.
pub fn gaps_in_window<'a>(case: &Case, ev: &'a Evidence) -> Vec<&'a LedgerGapRow> {
    let (Some(payer), Some(from)) = (case.payer.as_deref(), case.window_from()) else { return Vec::new() };
    ev.gaps.iter().filter(|g| g.agent_id == payer && g.detected_at >= from).collect()
}

/// Why pfsync left it to a person, and what the evidence suggests, in words.
pub fn assess(case: &Case, ev: &Evidence, found: &[Candidate], now: DateTime<Utc>) -> String {
    let source = Source::of(case);
    let open: Vec<&Candidate> = found.iter().filter(|c| c.claimed_by.is_none()).collect();
    let gaps = gaps_in_window(case, ev).len();
    let newest = match source {
        Source::Ledger => {
            let payer = case.payer.as_deref().unwrap_or_default();
            ev.entries.iter().filter(|e| e.agent_id == payer).map(|e| e.synced_at).max()
        }
        Source::Transactions => ev.transactions.iter().map(|t| t.synced_at).max(),
    };
    let stale = match (newest, case.last_intent_at) {
        (Some(synced), Some(intent)) => synced < intent,
        (None, _) => true,
        (Some(_), None) => false,
    };
    let mut why = match &case.summary.status {
        Status::InFlight { attempt } => format!(
            "attempt {attempt} has an intent and no outcome since {} ({} s): the run that sent it stopped",
            case.last_intent_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
            case.last_intent_at.map(|t| (now - t).num_seconds()).unwrap_or(0)
        ),
        Status::Unknown { attempt } => format!(
            "attempt {attempt}'s outcome is unknown ({}): a provider that can look it up settles it on the next \
             payouts run, where it could not the evidence below is all there is",
            case.summary.error_code.as_deref().unwrap_or("no code")
        ),
        other => format!("status {:?}", other.name()),
    };
    let hint = if stale {
        format!(
            "; {} has nothing synced since the latest intent: run `pfsync sync transactions`, then look again",
            source.describe()
        )
    } else {
        match (open.as_slice(), gaps) {
            ([], 0) => format!(
                "; no unclaimed record of this kind and amount in {} since the intent: it may never have run (check \
                 the provider, then `never-ran`)",
                source.describe()
            ),
            ([], n) => format!(
                "; no unclaimed record of this kind and amount, but the ledger copy has {n} gap(s) since the \
                 intent that may hide one: check the provider's records"
            ),
            ([one], _) => format!(
                "; one unclaimed candidate, {}: if it is this operation's, `completed --tx {}`",
                one.reference, one.reference
            ),
            (many, _) => format!(
                "; {} unclaimed candidates: which one (if any) is this operation's is for a person to tell",
                many.len()
            ),
        }
    };
    why.push_str(&hint);
    why
}

/// What a checked reference adds to the `completed` event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fit {
    pub escrow_id: Option<String>,
}

/// Is `reference` this operation's outcome as far as the copies show: it exists, its kind, amount and
/// payee (where it names one) fit, and no other operation claims it?
pub fn check_reference(
    case: &Case,
    reference: &str,
    ev: &Evidence,
    claims: &HashMap<String, Vec<String>>,
) -> Result<Fit, Refusal> {
    let s = &case.summary;
    let id = s.operation_id.as_str();
    let unfit = |why: String| Refusal::DoesNotFit { id: id.into(), reference: reference.into(), why };
    let source = Source::of(case);
    let fit = match source {
        Source::Ledger => {
            check_ledger(case, reference, ev).map_err(|e| e.unwrap_or_else(|| missing(id, reference, source)))?
        }
        Source::Transactions => {
            let t =
                ev.transactions.iter().find(|t| t.tx_id == reference).ok_or_else(|| missing(id, reference, source))?;
            if t.kind != tx_kind(s.kind) {
                return Err(unfit(format!(
                    "it is a {} transaction, a {} makes a {}",
                    t.kind.as_str(),
                    s.kind.as_str(),
                    tx_kind(s.kind).as_str()
                )));
            }
            match s.kind {
                OpKind::Payout | OpKind::EscrowCreate => {
                    if Some(t.amount_usd) != s.amount_usd {
                        return Err(unfit(format!(
                            "its amount is {}, the operation's {}",
                            t.amount_usd,
                            show(&s.amount_usd)
                        )));
                    }
                    if s.agent_id.as_deref() != Some(t.agent_id.as_str()) {
                        return Err(unfit(format!(
                            "it moves {}'s balance, the operation's agent is {}",
                            t.agent_id,
                            show(&s.agent_id)
                        )));
                    }
                    if s.kind == OpKind::EscrowCreate
                        && s.counterparty_agent_id.is_some()
                        && t.counterparty_agent_id != s.counterparty_agent_id
                    {
                        return Err(unfit(format!(
                            "its counterparty is {}, the operation's seller {}",
                            show(&t.counterparty_agent_id),
                            show(&s.counterparty_agent_id)
                        )));
                    }
                    Fit { escrow_id: if s.kind == OpKind::EscrowCreate { t.reference.clone() } else { None } }
                }
                OpKind::EscrowRelease | OpKind::EscrowDispute => {
                    if s.escrow_id.is_some() && t.reference != s.escrow_id {
                        return Err(unfit(format!(
                            "it is of escrow {}, the operation's is {}",
                            show(&t.reference),
                            show(&s.escrow_id)
                        )));
                    }
                    Fit { escrow_id: t.reference.clone() }
                }
            }
        }
    };
    if let Some(other) = claimed_by(claims, reference, id) {
        return Err(Refusal::Claimed { id: id.into(), reference: reference.into(), other });
    }
    Ok(fit)
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

fn missing(id: &str, reference: &str, source: Source) -> Refusal {
    Refusal::NoSuchReference { id: id.into(), reference: reference.into(), copy: source.describe() }
}

/// The payer's ledger copy: `Err(None)` when the reference is not there.
fn check_ledger(case: &Case, reference: &str, ev: &Evidence) -> Result<Fit, Option<Refusal>> {
    let s = &case.summary;
    let id = s.operation_id.as_str();
    let payer = case.payer.as_deref().unwrap_or_default();
    let unfit = |why: String| Some(Refusal::DoesNotFit { id: id.into(), reference: reference.into(), why });
    if matches!(s.kind, OpKind::EscrowRelease | OpKind::EscrowDispute) {
        return Err(Some(Refusal::Unsupported {
            id: id.into(),
            kind: s.kind.as_str(),
            what: "the provider's transactions; at this provider the next payouts run reads the escrow's state",
        }));
    }
    let debit =
        ev.entries.iter().filter(|e| e.is_debit()).find(|e| {
            e.entry_id == reference || (s.kind == OpKind::Payout && e.reference.as_deref() == Some(reference))
        });
    let Some(e) = debit else {
        // A credit of that reference is a payment received, not made.
        return match ev.entries.iter().find(|e| e.entry_id == reference || e.reference.as_deref() == Some(reference)) {
            Some(e) => {
                Err(unfit(format!("it is a {} credit of {}, not a debit of the payer {payer}", e.reason, e.agent_id)))
            }
            None => Err(None),
        };
    };
    if e.agent_id != payer {
        return Err(unfit(format!("it debits {}, the operation's payer is {payer}", e.agent_id)));
    }
    if !is_debit_of(s.kind, e) {
        return Err(unfit(format!(
            "it is a {} debit, a {} writes a {}",
            e.reason,
            s.kind.as_str(),
            match s.kind {
                OpKind::Payout => "payment_sent",
                _ => "escrow_lock",
            }
        )));
    }
    if Some(e.amount_usd) != case.amount() {
        return Err(unfit(format!("its amount is {}, the operation's {}", e.amount_usd, show(&s.amount_usd))));
    }
    if let Some(from) = case.window_from()
        && e.created_at < from
    {
        return Err(unfit(format!(
            "it was written at {}, before the operation's first intent",
            e.created_at.to_rfc3339()
        )));
    }
    if s.kind == OpKind::Payout
        && let Some(payee) = payee_of(&ev.entries, &debit_reference(s.kind, e), payer)
        && s.agent_id.as_deref() != Some(payee.as_str())
    {
        return Err(unfit(format!("it paid {payee}, the operation's payee is {}", show(&s.agent_id))));
    }
    let escrow_id = match s.kind {
        OpKind::EscrowCreate => e.reference.clone(),
        _ => None,
    };
    Ok(Fit { escrow_id })
}

/// Who decided, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person<'a> {
    pub by: &'a str,
    pub note: &'a str,
}

/// The event that records a person's decision: the operation's values, the latest attempt, who and why.
pub fn decision_event(
    events: &[LogEvent],
    attempt: i32,
    decision: &Decision,
    fit: &Fit,
    person: Person<'_>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Option<LogEvent> {
    let latest = events.iter().filter(|e| e.event == Event::Intent).max_by_key(|e| (e.attempt, e.recorded_at))?;
    let greatest = |f: fn(&LogEvent) -> Option<&String>| events.iter().filter_map(f).max().cloned();
    Some(LogEvent {
        operation_id: latest.operation_id.clone(),
        kind: latest.kind,
        event: decision.event(),
        attempt,
        agent_id: greatest(|e| e.agent_id.as_ref()),
        counterparty_agent_id: greatest(|e| e.counterparty_agent_id.as_ref()),
        amount_usd: events.iter().filter_map(|e| e.amount_usd).max(),
        reason: greatest(|e| e.reason.as_ref()),
        idempotency_key: latest.idempotency_key.clone(),
        tx_id: match decision {
            Decision::Completed { tx } => Some(tx.clone()),
            _ => None,
        },
        escrow_id: fit.escrow_id.clone().or_else(|| greatest(|e| e.escrow_id.as_ref())),
        http_status: None,
        error_code: None,
        error_message: None,
        run_id: run_id.to_string(),
        recorded_at: now,
        recorded_date: now.date_naive(),
        payer_agent_id: greatest(|e| e.payer_agent_id.as_ref()),
        decided_by: Some(person.by.to_string()),
        note: Some(person.note.to_string()),
        escrow_tag: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rows::EntryType;
    use crate::money::Usd;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn ev(id: &str, event: Event, attempt: i32, secs: i64) -> LogEvent {
        LogEvent {
            agent_id: Some("payee".into()),
            amount_usd: Some(Usd::from_cents(333).unwrap()),
            reason: Some("r".into()),
            tx_id: (event == Event::Completed).then(|| format!("pay_{id}")),
            error_code: (event == Event::Unknown).then(|| "lookup_inconclusive".into()),
            payer_agent_id: Some("payer".into()),
            ..LogEvent::new(id, OpKind::Payout, event, attempt, format!("pfsync:t:payout:{id}"), "run", at(secs))
        }
    }

    fn entry(
        id: &str,
        agent: &str,
        debit: bool,
        reason: &str,
        reference: &str,
        cents: i64,
        secs: i64,
    ) -> LedgerEntryRow {
        LedgerEntryRow {
            entry_id: id.into(),
            agent_id: agent.into(),
            r#type: if debit { EntryType::Debit } else { EntryType::Credit },
            amount_usd: Micros::from_usd(Usd::from_cents(cents).unwrap()),
            balance_after_usd: Micros::ZERO,
            reason: reason.into(),
            reference: Some(reference.into()),
            service: None,
            created_at: at(secs),
            ledger_seq: secs,
            created_date: at(secs).date_naive(),
            synced_at: at(1_000),
        }
    }

    #[test]
    fn only_an_unknown_outcome_or_an_intent_past_the_timeout_waits_for_a_person_and_is_decided() {
        let timeout = Duration::seconds(60);
        let unknown = vec![ev("u", Event::Intent, 1, 0), ev("u", Event::Unknown, 1, 1)];
        let fresh = vec![ev("f", Event::Intent, 1, 100)];
        let done = vec![ev("d", Event::Intent, 1, 0), ev("d", Event::Completed, 1, 1)];
        assert!(needs_person(&unknown, at(100), timeout));
        assert!(!needs_person(&fresh, at(120), timeout) && needs_person(&fresh, at(160), timeout));
        assert!(!needs_person(&done, at(100), timeout));
        let never = Decision::NeverRan;
        assert_eq!(check_decidable("u", &unknown, &never, at(100), timeout), Ok(1));
        assert!(matches!(check_decidable("f", &fresh, &never, at(120), timeout), Err(Refusal::InFlight { .. })));
        assert_eq!(check_decidable("f", &fresh, &Decision::Abandoned, at(160), timeout), Ok(1));
        assert!(matches!(
            check_decidable("d", &done, &Decision::Abandoned, at(100), timeout),
            Err(Refusal::Final { status: "completed", .. })
        ));
        assert_eq!(check_decidable("n", &[], &never, at(0), timeout), Err(Refusal::NotLogged("n".into())));
        // Found never ran: not again for the same attempt; a completed or abandoned may still follow.
        let mut decided = unknown.clone();
        decided.push(ev("u", Event::NeverRan, 1, 2));
        assert!(matches!(
            check_decidable("u", &decided, &never, at(100), timeout),
            Err(Refusal::AlreadyNeverRan { .. })
        ));
        assert_eq!(check_decidable("u", &decided, &Decision::Abandoned, at(100), timeout), Ok(1));
    }

    #[test]
    fn a_reference_is_taken_only_if_it_is_an_unclaimed_debit_of_the_payers_that_fits() {
        let events = vec![ev("u", Event::Intent, 1, 0), ev("u", Event::Unknown, 1, 5), ev("d", Event::Completed, 1, 0)];
        let case = Case::of(&events[..2]).unwrap();
        let ev = Evidence {
            entries: vec![
                entry("e1", "payer", true, "payment_sent", "pay_mine", 333, 1),
                entry("e2", "payer", true, "payment_sent", "pay_other", 333, 2),
                entry("c2", "someone", false, "payment_received", "pay_other", 333, 2),
                entry("e3", "payer", true, "payment_sent", "pay_less", 111, 3),
                entry("e4", "payer", true, "payment_sent", "pay_d", 333, 3),
                entry("e5", "other_payer", true, "payment_sent", "pay_theirs", 333, 3),
                entry("e6", "payer", true, "payment_sent", "pay_old", 333, -1_000),
                entry("e7", "payer", false, "deposit", "dep", 333, 4),
            ],
            ..Evidence::default()
        };
        let claimed = claims(&events);
        assert_eq!(check_reference(&case, "pay_mine", &ev, &claimed), Ok(Fit::default()));
        let refused = |r: &str| check_reference(&case, r, &ev, &claimed).unwrap_err().to_string();
        assert!(refused("pay_other").contains("it paid someone"));
        assert!(refused("pay_less").contains("its amount is 1.11"));
        assert!(refused("pay_d").contains("already the outcome of operation d"));
        assert!(refused("pay_theirs").contains("it debits other_payer"));
        assert!(refused("pay_old").contains("before the operation's first intent"));
        assert!(refused("dep").contains("deposit credit"));
        assert!(refused("pay_none").contains("is not in the payer's ledger copy"));
        // The candidates: this kind, amount and payer since the window, each with who claims it.
        let found = candidates(&case, &ev, &claimed);
        let refs: Vec<(&str, Option<&str>)> =
            found.iter().map(|c| (c.reference.as_str(), c.claimed_by.as_deref())).collect();
        assert_eq!(refs, [("pay_mine", None), ("pay_other", None), ("pay_d", Some("d"))]);
        assert_eq!(found[1].payee.as_deref(), Some("someone"));
        assert!(assess(&case, &ev, &found, at(100)).contains("2 unclaimed candidates"));
    }

    #[test]
    fn the_decision_event_carries_the_operations_values_who_and_why() {
        let events = vec![ev("u", Event::Intent, 1, 0), ev("u", Event::Unknown, 1, 1)];
        let d = Decision::Completed { tx: "pay_mine".into() };
        let e = decision_event(&events, 1, &d, &Fit::default(), Person { by: "alice", note: "checked" }, "r2", at(50))
            .unwrap();
        assert_eq!((e.event, e.attempt, e.tx_id.as_deref()), (Event::Completed, 1, Some("pay_mine")));
        assert_eq!((e.decided_by.as_deref(), e.note.as_deref()), (Some("alice"), Some("checked")));
        assert_eq!((e.idempotency_key.as_str(), e.payer_agent_id.as_deref()), ("pfsync:t:payout:u", Some("payer")));
        assert_eq!((e.error_code, e.amount_usd), (None, Some(Usd::from_cents(333).unwrap())));
    }
}
