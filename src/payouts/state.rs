//! The state of one operation, read from its log events (`intent -> completed | rejected | unknown`), and
//! how a failed send is recorded. Pure. What to do next with an operation in each state is `plan::decide`.

use chrono::{DateTime, Utc};

use crate::money::Usd;
use crate::operation::OpKind;
use crate::provider::{ProviderError, Verdict};
use crate::text::clip;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    Intent,
    Completed,
    Rejected,
    Unknown,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Intent => "intent",
            Event::Completed => "completed",
            Event::Rejected => "rejected",
            Event::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Some(match s {
            "intent" => Event::Intent,
            "completed" => Event::Completed,
            "rejected" => Event::Rejected,
            "unknown" => Event::Unknown,
            _ => return None,
        })
    }
}

/// One event of an operation as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub event: Event,
    pub attempt: i32,
    pub kind: OpKind,
    pub agent_id: Option<String>,
    pub counterparty: Option<String>,
    pub amount: Option<Usd>,
    pub reason: Option<String>,
    pub tx_id: Option<String>,
    pub escrow_id: Option<String>,
    pub error_code: Option<String>,
    pub recorded_at: Option<DateTime<Utc>>,
}

/// When the latest intent of an operation was recorded (by any run).
pub fn last_intent_at(events: &[Logged]) -> Option<DateTime<Utc>> {
    events.iter().filter(|e| e.event == Event::Intent).filter_map(|e| e.recorded_at).max()
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
}

impl Status {
    pub fn is_final(&self) -> bool {
        matches!(self, Status::Completed { .. } | Status::Rejected { .. })
    }
}

/// The status an operation's events add up to. Money having moved is the strongest fact: a `completed`
/// anywhere wins over everything (two overlapping runs may both log one); then `rejected`; otherwise the
/// latest attempt's last event decides.
///
/// The events may come in any order: the log is read back without one (Delta files and their rows in any
/// order). So where overlapping runs logged different answers (two tx ids, two refusal codes) the greatest
/// is taken, never the first seen: the same log always gives the same status, and the same one the
/// `purpleflea.payouts.status` view gives with `max()` (a property test checks the two agree).
pub fn status(events: &[Logged]) -> Status {
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
    let Some(attempt) = events.iter().map(|e| e.attempt).max() else { return Status::New };
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

    fn ev(event: Event, attempt: i32) -> Logged {
        Logged {
            event,
            attempt,
            kind: OpKind::Payout,
            agent_id: None,
            counterparty: None,
            amount: None,
            reason: None,
            tx_id: (event == Event::Completed).then(|| "tx".into()),
            escrow_id: None,
            error_code: (event == Event::Rejected).then(|| "insufficient_funds".into()),
            recorded_at: None,
        }
    }

    #[test]
    fn every_history_adds_up_to_one_status() {
        use Event::*;
        let done = Status::Completed { tx_id: Some("tx".into()), escrow_id: None };
        let cases: Vec<(Vec<Logged>, Status)> = vec![
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
