//! The execution's rules for one step at a time, each a pure function of its inputs: what a lookup's
//! evidence means for an earlier attempt ([`judge`]), what a step left unresolved holds back ([`Hold`]),
//! whether a send may still start ([`may_start`]), how far apart batches start ([`pace`]), and the log row a
//! step writes ([`event`]). `execution.rs` applies them batch by batch.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PayoutReport;
use super::log::LogEvent;
use super::plan::Step;
use super::state::{Event, FailedOutcome, clip_message};
use crate::money::Usd;
use crate::operation::{EscrowRef, OpKind};
use crate::provider::{Capabilities, Evidence, Lookup};

/// A failed provider call, as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub outcome: FailedOutcome,
    /// The provider refused our key: the run stops after this batch.
    pub key_refused: bool,
}

/// At a provider resolved from ledgers, the least time between the end of one batch's sends and the
/// start of the next (see [`pace`]).
pub const BATCH_SPACING: Duration = Duration::from_millis(1050);

/// What an operation that cannot be sent now holds back with it: only what its evidence could be confused
/// with in a payer's ledger, or what another process is sending.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Hold {
    /// Another process's intents for this payer are open (the lease).
    Payer(String),
    /// Another process's intents of unknown payer are open (logged before payers were recorded): every
    /// payer waits for them.
    EveryPayer,
    /// A debit of this kind, payer and amount: another one would be indistinguishable in the ledger.
    Debit(OpKind, String, Usd),
    /// Another action on this escrow (by id, or by the create action that makes it).
    Escrow(String),
}

impl Hold {
    /// What an unresolved `op` holds back.
    pub fn of(s: &Step) -> Hold {
        match (s.op.amount(), s.op.escrow()) {
            (Some(a), _) => Hold::Debit(s.op.kind(), s.payer.clone().unwrap_or_default(), a),
            (None, Some(EscrowRef::Id(e))) => Hold::Escrow(e.clone()),
            (None, Some(EscrowRef::CreatedBy(c))) => Hold::Escrow(format!("created-by:{c}")),
            (None, None) => Hold::Escrow(s.op.id.clone()),
        }
    }

    /// The same for a logged event (an outcome taken back after a conflict).
    pub(super) fn of_event(e: &LogEvent) -> Hold {
        match (e.amount_usd, &e.escrow_id) {
            (Some(a), _) => Hold::Debit(e.kind, e.payer_agent_id.clone().unwrap_or_default(), a),
            (None, Some(esc)) => Hold::Escrow(esc.clone()),
            (None, None) => Hold::Escrow(e.operation_id.clone()),
        }
    }
}

/// May a send of an intent committed at `intent_at` still start at `now`? Not so late that another run
/// could already take the intent for abandoned: `latest_start` is `intent_at + in_flight_timeout -
/// send_budget`.
pub fn may_start(now: DateTime<Utc>, latest_start: DateTime<Utc>) -> bool {
    now <= latest_start
}

/// At a provider resolved from ledgers, one batch's sends start at least [`BATCH_SPACING`] after the
/// previous batch's ended. The ledger is read as its newest 50 entries by whole second, and entries of
/// one second come in no order, so a second holding more than 50 entries cannot be read whole. Batches a
/// second apart keep every second to one batch (at most 20 debits of a payer): the window then always
/// reaches back past the previous read, for the ledger copy and for the evidence alike. This bounds a
/// payer to about 20 payouts a second.
pub fn pace(caps: &Capabilities, sending: bool, last_sends: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    match (caps.ledger_evidence, sending, last_sends) {
        (true, true, Some(t)) => {
            let elapsed = (now - t).to_std().unwrap_or(Duration::ZERO);
            BATCH_SPACING.saturating_sub(elapsed)
        }
        _ => Duration::ZERO,
    }
}

/// A log row for a step. Every field an auditor needs comes from the typed operation.
pub fn event(s: &Step, ev: Event, run_id: &str, at: DateTime<Utc>) -> LogEvent {
    LogEvent {
        agent_id: s.op.agent_id().map(str::to_string),
        counterparty_agent_id: s.op.counterparty().map(str::to_string),
        amount_usd: s.op.amount(),
        reason: Some(s.op.reason.clone()),
        escrow_id: s.op.escrow_id().map(str::to_string),
        payer_agent_id: s.payer.clone(),
        // What the intent sent is what a later lookup may accept (see `Step::legacy_escrow_tag`).
        escrow_tag: if ev == Event::Intent { s.escrow_tag.clone() } else { None },
        ..LogEvent::new(s.op.id.clone(), s.op.kind(), ev, s.attempt, s.key.as_str(), run_id, at)
    }
}

/// What the provider's evidence about an earlier attempt means for the log and the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// It never ran: this attempt may be sent.
    Send,
    /// The event to log for the earlier attempt; `halt`: what could be confused with it in the provider's
    /// evidence ([`Hold::of`]) is not sent this run.
    Record { event: Box<LogEvent>, halt: bool },
}

/// Judge one lookup. `e` is the earlier attempt's event, `unknown` until the evidence says otherwise.
pub fn judge(
    caps: &Capabilities,
    s: &Step,
    found: Result<Lookup, Failure>,
    mut e: LogEvent,
    report: &mut PayoutReport,
) -> Judged {
    let halt = match found {
        Ok(Lookup::NotExecuted) => return Judged::Send,
        Ok(Lookup::Executed { tx_id, escrow_id, duplicates, evidence }) => {
            e.event = Event::Completed;
            e.tx_id = tx_id;
            if let Some(esc) = escrow_id {
                e.escrow_id = Some(esc);
            }
            e.error_message = Some(match duplicates {
                0 => evidence.describe().into(),
                n => format!("{}; {n} more transaction(s) carry this key", evidence.describe()),
            });
            report.completed += 1;
            report.resolved_by_lookup += 1;
            if evidence != Evidence::Key {
                report.resolved_from_ledger += 1;
            }
            false
        }
        Ok(Lookup::Inconclusive { why }) => {
            tracing::warn!(id = %s.op.id, "evidence inconclusive, the operation stays unknown for a person: {why}");
            e.error_code = Some("lookup_inconclusive".into());
            e.error_message = Some(clip_message(why));
            report.unknown += 1;
            report.needs_person += 1;
            // Where outcomes are read from a ledger, a later debit of the same amount would be taken for
            // this operation's once the evidence is readable again: what it could be confused with waits.
            caps.ledger_evidence
        }
        Ok(Lookup::Pending { why }) => {
            tracing::info!(id = %s.op.id, "no evidence yet; the operation stays unknown for a later run: {why}");
            e.error_code = Some("lookup_pending".into());
            e.error_message = Some(clip_message(why));
            report.unknown += 1;
            caps.ledger_evidence
        }
        Err(f) => {
            tracing::warn!(id = %s.op.id, error = %f.outcome.message, "lookup failed; the operation stays unknown for the next run");
            (e.http_status, e.error_code, e.error_message) =
                (f.outcome.http_status, Some("lookup_failed".into()), Some(f.outcome.message));
            report.unknown += 1;
            caps.ledger_evidence
        }
    };
    Judged::Record { event: Box::new(e), halt }
}
