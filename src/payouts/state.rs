//! The state of one operation, read from its log events (`intent -> completed | rejected | unknown`), and
//! how a failed send is recorded. Pure. What to do next with an operation in each state is `plan::decide`.

use chrono::{DateTime, Utc};

pub use super::event::{Event, LogEvent};
use crate::money::Usd;
use crate::operation::OpKind;
use crate::provider::{ProviderError, Verdict};
use crate::tables::row::Text;
use crate::text::clip;

/// When the latest intent of an operation was recorded (by any run).
pub fn last_intent_at(events: &[LogEvent]) -> Option<DateTime<Utc>> {
    events.iter().filter(|e| e.event == Event::Intent).map(|e| e.recorded_at).max()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Never attempted.
    New,
    /// Intent recorded, no outcome: the run died, or is running now.
    InFlight {
        attempt: i32,
    },
    /// Sent, outcome unknown (timeout, 5xx, dropped connection).
    Unknown {
        attempt: i32,
    },
    Completed {
        tx_id: Option<String>,
        escrow_id: Option<String>,
    },
    Rejected {
        code: String,
    },
    /// A person decided the latest attempt never ran (`pfsync resolve never-ran`): the next may be sent.
    NeverRan {
        attempt: i32,
    },
    /// A person decided the operation is not to be paid (`pfsync resolve abandoned`).
    Abandoned,
}

impl Status {
    pub fn is_final(&self) -> bool {
        matches!(self, Status::Completed { .. } | Status::Rejected { .. } | Status::Abandoned)
    }

    /// As the status view spells it; `None` for an operation never logged.
    pub fn name(&self) -> Option<StatusName> {
        Some(match self {
            Status::New => return None,
            Status::InFlight { .. } => StatusName::InFlight,
            Status::Unknown { .. } => StatusName::Unknown,
            Status::Completed { .. } => StatusName::Completed,
            Status::Rejected { .. } => StatusName::Rejected,
            Status::NeverRan { .. } => StatusName::NeverRan,
            Status::Abandoned => StatusName::Abandoned,
        })
    }
}

/// A logged operation's status as the `purpleflea.payouts.status` view's `status` column spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusName {
    InFlight,
    Unknown,
    Completed,
    Rejected,
    NeverRan,
    Abandoned,
}

impl Text for StatusName {
    const WHAT: &'static str = "an operation status (in_flight, unknown, completed, rejected, never_ran, abandoned)";
    fn as_str(self) -> &'static str {
        match self {
            StatusName::InFlight => "in_flight",
            StatusName::Unknown => "unknown",
            StatusName::Completed => "completed",
            StatusName::Rejected => "rejected",
            StatusName::NeverRan => "never_ran",
            StatusName::Abandoned => "abandoned",
        }
    }
    fn parse(s: &str) -> Option<StatusName> {
        use StatusName::*;
        [InFlight, Unknown, Completed, Rejected, NeverRan, Abandoned].into_iter().find(|n| n.as_str() == s)
    }
}

/// An operation as its log events add up: the `purpleflea.payouts.status` view's row, with the status from
/// [`status`]. Where overlapping runs logged different values the greatest is taken, as the view does.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub operation_id: String,
    pub kind: OpKind,
    pub status: Status,
    pub attempts: i32,
    pub agent_id: Option<String>,
    pub counterparty_agent_id: Option<String>,
    pub amount_usd: Option<Usd>,
    /// The provider transaction of a completed operation.
    pub tx_id: Option<String>,
    pub escrow_id: Option<String>,
    /// A refusal's code and message, else an unknown outcome's (where a lookup names its candidate entries).
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_recorded_at: DateTime<Utc>,
}

impl Summary {
    /// What `events`, all of one operation, add up to; `None` for no event.
    pub fn of(events: &[LogEvent]) -> Option<Summary> {
        let first = events.first()?;
        let greatest = |f: fn(&LogEvent) -> Option<&String>| events.iter().filter_map(f).max().cloned();
        let outcome = |f: fn(&LogEvent) -> Option<&String>| {
            let of = |event: Event| events.iter().filter(|e| e.event == event).filter_map(f).max().cloned();
            of(Event::Rejected).or_else(|| of(Event::Unknown))
        };
        let status = status(events);
        Some(Summary {
            operation_id: first.operation_id.clone(),
            kind: events.iter().map(|e| e.kind).max_by_key(|k| k.as_str()).unwrap_or(first.kind),
            tx_id: match &status {
                Status::Completed { tx_id, .. } => tx_id.clone(),
                _ => None,
            },
            status,
            attempts: events.iter().map(|e| e.attempt).max().unwrap_or(first.attempt),
            agent_id: greatest(|e| e.agent_id.as_ref()),
            counterparty_agent_id: greatest(|e| e.counterparty_agent_id.as_ref()),
            amount_usd: events.iter().filter_map(|e| e.amount_usd).max(),
            escrow_id: greatest(|e| e.escrow_id.as_ref()),
            error_code: outcome(|e| e.error_code.as_ref()),
            error_message: outcome(|e| e.error_message.as_ref()),
            last_recorded_at: events.iter().map(|e| e.recorded_at).max().unwrap_or(first.recorded_at),
        })
    }

    pub fn is_completed(&self) -> bool {
        matches!(self.status, Status::Completed { .. })
    }
}

/// The status an operation's events add up to. Money having moved is the strongest fact: a `completed`
/// anywhere wins over everything (two overlapping runs may both log one); then `rejected`; then a person's
/// `abandoned`; otherwise the latest attempt decides: a person's `never_ran` for it, else its `unknown`,
/// else its intent alone (in flight).
///
/// The events may come in any order: the log is read back without one (Delta files and their rows in any
/// order). So where overlapping runs logged different answers (two tx ids, two refusal codes) the greatest
/// is taken, never the first seen: the same log always gives the same status, and the same one the
/// `purpleflea.payouts.status` view gives with `max()` (a property test checks the two agree).
pub fn status(events: &[LogEvent]) -> Status {
    let of = |event: Event| events.iter().filter(move |e| e.event == event);
    if of(Event::Completed).next().is_some() {
        return Status::Completed {
            tx_id: of(Event::Completed).filter_map(|e| e.tx_id.clone()).max(),
            escrow_id: of(Event::Completed).filter_map(|e| e.escrow_id.clone()).max(),
        };
    }
    if of(Event::Rejected).next().is_some() {
        let code = of(Event::Rejected).filter_map(|e| e.error_code.clone()).max();
        return Status::Rejected { code: code.unwrap_or_else(|| "rejected".into()) };
    }
    if of(Event::Abandoned).next().is_some() {
        return Status::Abandoned;
    }
    let Some(attempt) = events.iter().map(|e| e.attempt).max() else { return Status::New };
    if events.iter().any(|e| e.attempt == attempt && e.event == Event::NeverRan) {
        return Status::NeverRan { attempt };
    }
    if events.iter().any(|e| e.attempt == attempt && e.event == Event::Unknown) {
        Status::Unknown { attempt }
    } else {
        Status::InFlight { attempt }
    }
}

/// How a failed send is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedOutcome {
    pub event: Event,
    pub http_status: Option<i32>,
    pub code: String,
    pub message: String,
}

/// A provider's final refusals become `rejected`; everything that might have moved money, or might
/// succeed on a later attempt, becomes `unknown` and is resolved from the provider's evidence. Never
/// `failed`. The code is the provider's own where it gave one (a 5xx code such as `release_failed` tells a
/// person what broke).
pub fn classify(e: &ProviderError) -> FailedOutcome {
    let event = match e.verdict() {
        Verdict::Rejected => Event::Rejected,
        Verdict::Unknown => Event::Unknown,
    };
    FailedOutcome {
        event,
        http_status: e.http_status().map(i32::from),
        code: e.code(),
        message: clip_message(e.to_string()),
    }
}

/// A message for the log's `error_message`, at most 1,000 bytes, cut on a character boundary: the text can
/// come from the provider, and `String::truncate` inside a multi-byte character would panic.
pub fn clip_message(mut s: String) -> String {
    s.truncate(clip(&s, 1000).len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Event, attempt: i32) -> LogEvent {
        let at = chrono::DateTime::UNIX_EPOCH;
        LogEvent {
            tx_id: (event == Event::Completed).then(|| "tx".into()),
            error_code: (event == Event::Rejected).then(|| "insufficient_funds".into()),
            ..LogEvent::new("op", OpKind::Payout, event, attempt, "key", "run", at)
        }
    }

    #[test]
    fn every_history_adds_up_to_one_status() {
        use Event::*;
        let done = Status::Completed { tx_id: Some("tx".into()), escrow_id: None };
        let cases: Vec<(Vec<LogEvent>, Status)> = vec![
            (vec![], Status::New),
            (vec![ev(Intent, 1)], Status::InFlight { attempt: 1 }),
            (vec![ev(Intent, 1), ev(Unknown, 1)], Status::Unknown { attempt: 1 }),
            (vec![ev(Intent, 1), ev(Unknown, 1), ev(Intent, 2)], Status::InFlight { attempt: 2 }),
            (vec![ev(Intent, 1), ev(Completed, 1)], done.clone()),
            (vec![ev(Intent, 1), ev(Rejected, 1)], Status::Rejected { code: "insufficient_funds".into() }),
            (vec![ev(Intent, 1), ev(Unknown, 1), ev(Intent, 2), ev(Completed, 2)], done.clone()),
            // Two overlapping runs: one saw unknown, the other completed: completed wins.
            (vec![ev(Intent, 1), ev(Intent, 1), ev(Completed, 1), ev(Unknown, 1)], done),
        ];
        for (events, want) in cases {
            assert_eq!(status(&events), want, "{events:?}");
        }
    }

    #[test]
    fn a_long_provider_message_in_multi_byte_text_is_clipped_without_a_panic() {
        // 999 ASCII bytes then a 3-byte character: byte 1000 falls inside it.
        let message = format!("{}€€€", "x".repeat(999));
        let f = classify(&ProviderError::refused(409, "invalid_state", "invalid state", message));
        assert!(f.message.len() <= 1000 && f.message.ends_with('x'), "{}", f.message.len());
    }
}
