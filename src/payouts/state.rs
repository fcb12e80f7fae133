//! The state machine of one operation, read from its log events: `intent -> completed | rejected | unknown`,
//! and what to do next. Pure: the engine feeds it log rows and acts on the answer.

use chrono::{DateTime, Utc};

use super::operation::OpKind;
use crate::api::ApiError;
use crate::money::Usd;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Final already: nothing to do.
    Skip,
    /// First send: record the intent, then send.
    Send { attempt: i32 },
    /// A previous attempt's outcome is not known: look it up by idempotency key first; only if the
    /// provider has no transaction for it, record a new intent and send again with the same key.
    Resolve { attempt: i32 },
}

pub fn next(status: &Status) -> Next {
    match status {
        Status::New => Next::Send { attempt: 1 },
        Status::InFlight { attempt } | Status::Unknown { attempt } => Next::Resolve { attempt: attempt + 1 },
        Status::Completed { .. } | Status::Rejected { .. } => Next::Skip,
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

/// The contract's final refusals become `rejected`; everything that might have moved money, or might
/// succeed on a later attempt, becomes `unknown` and is resolved by lookup. Never `failed`.
pub fn classify(e: &ApiError) -> FailedOutcome {
    let (event, status) = match e {
        ApiError::InvalidRequest { .. } => (Event::Rejected, Some(400)),
        ApiError::AgentNotFound { .. } | ApiError::EscrowNotFound { .. } => (Event::Rejected, Some(404)),
        ApiError::InsufficientFunds { .. } => (Event::Rejected, Some(402)),
        ApiError::InvalidState { .. } => (Event::Rejected, Some(409)),
        // Our key with another body: the provider will never run this operation under this key.
        ApiError::IdempotencyKeyReused { .. } => (Event::Rejected, Some(422)),
        ApiError::IdempotencyKeyInUse => (Event::Unknown, Some(409)),
        ApiError::Refused { status, code, .. } => {
            return FailedOutcome {
                event: Event::Rejected,
                http_status: Some(*status as i32),
                code: code.clone(),
                message: clip_message(e.to_string()),
            };
        }
        // Refused before it ran; unknown all the same, so the next run (with a working key) looks it up.
        ApiError::Unauthorized => (Event::Unknown, Some(401)),
        ApiError::RateLimited { .. } => (Event::Unknown, Some(429)),
        ApiError::Server { status, .. } => (Event::Unknown, Some(*status as i32)),
        ApiError::Decode { status, .. } | ApiError::Unexpected { status, .. } => (Event::Unknown, Some(*status as i32)),
        _ => (Event::Unknown, None),
    };
    // A provider's own 5xx code (`release_failed`, `debit_failed`) is kept: it tells a person what broke.
    let provider_code = match e {
        ApiError::Server { message, .. } => message
            .split_once(": ")
            .map(|(c, _)| c)
            .filter(|c| !c.is_empty() && c.len() <= 40 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_string),
        _ => None,
    };
    let code = provider_code.or_else(|| e.code().map(str::to_string)).unwrap_or_else(|| match e {
        ApiError::Transport { .. } => "transport".into(),
        ApiError::Decode { .. } => "malformed_response".into(),
        ApiError::TooLarge { .. } => "response_too_large".into(),
        ApiError::GaveUp { .. } => "gave_up".into(),
        _ => "unexpected".into(),
    });
    FailedOutcome { event, http_status: status, code, message: clip_message(e.to_string()) }
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
    fn every_history_maps_to_one_next_step() {
        use Event::*;
        let cases: Vec<(Vec<Logged>, Next)> = vec![
            (vec![], Next::Send { attempt: 1 }),
            (vec![ev(Intent, 1)], Next::Resolve { attempt: 2 }),
            (vec![ev(Intent, 1), ev(Unknown, 1)], Next::Resolve { attempt: 2 }),
            (vec![ev(Intent, 1), ev(Unknown, 1), ev(Intent, 2)], Next::Resolve { attempt: 3 }),
            (vec![ev(Intent, 1), ev(Completed, 1)], Next::Skip),
            (vec![ev(Intent, 1), ev(Rejected, 1)], Next::Skip),
            (vec![ev(Intent, 1), ev(Unknown, 1), ev(Intent, 2), ev(Completed, 2)], Next::Skip),
            // Two overlapping runs: one saw unknown, the other completed: completed wins.
            (vec![ev(Intent, 1), ev(Intent, 1), ev(Completed, 1), ev(Unknown, 1)], Next::Skip),
        ];
        for (events, want) in cases {
            assert_eq!(next(&status(&events)), want, "{events:?}");
        }
    }

    #[test]
    fn the_live_services_refusals_are_rejected_with_their_own_code_and_their_5xx_stay_unknown() {
        // 4xx refusals of Purple Flea's live services, as the client decodes them.
        for (status, code) in [
            (400, "insufficient_balance"),
            (404, "recipient_not_found"),
            (409, "invalid_status"),
            (403, "forbidden"),
            (404, "counterparty_not_found"),
            (400, "same_agent"),
        ] {
            let e = ApiError::from_code("POST /stats/pay", status, code, "m".into());
            let f = classify(&e);
            assert_eq!(
                (f.event, f.code.as_str(), f.http_status),
                (Event::Rejected, code, Some(status as i32)),
                "{code}"
            );
        }
        // Their 5xx: the operation may have run (release_failed after the credit): unknown, code kept.
        let s = ApiError::Server {
            endpoint: "e".into(),
            status: 500,
            message: "release_failed: Contact support.".into(),
            attempts: 1,
        };
        assert_eq!((classify(&s).event, classify(&s).code.as_str()), (Event::Unknown, "release_failed"));
        let plain =
            ApiError::Server { endpoint: "e".into(), status: 502, message: "<html>bad gateway".into(), attempts: 1 };
        assert_eq!(classify(&plain).code, "internal");
        // A code the client does not know stays an unexpected answer: unknown, never a rejection.
        let odd = ApiError::from_code("e", 418, "teapot", "m".into());
        assert_eq!(classify(&odd).event, Event::Unknown);
    }

    #[test]
    fn a_long_provider_message_in_multi_byte_text_is_clipped_without_a_panic() {
        // 999 ASCII bytes then a 3-byte character: byte 1000 falls inside it.
        let message = format!("{}€€€", "x".repeat(999));
        let f = classify(&ApiError::InvalidState { message });
        assert!(f.message.len() <= 1000 && f.message.ends_with('x'), "{}", f.message.len());
    }

    #[test]
    fn final_refusals_are_rejected_and_the_rest_unknown() {
        let m = || "m".to_string();
        assert_eq!(classify(&ApiError::InsufficientFunds { message: m() }).event, Event::Rejected);
        assert_eq!(classify(&ApiError::AgentNotFound { message: m() }).code, "agent_not_found");
        assert_eq!(classify(&ApiError::InvalidState { message: m() }).event, Event::Rejected);
        assert_eq!(classify(&ApiError::InvalidRequest { message: m() }).http_status, Some(400));
        assert_eq!(classify(&ApiError::IdempotencyKeyInUse).event, Event::Unknown);
        let t = ApiError::Transport { endpoint: "e".into(), detail: "d".into(), attempts: 3, connected: true };
        assert_eq!((classify(&t).event, classify(&t).code.as_str()), (Event::Unknown, "transport"));
        let s = ApiError::Server { endpoint: "e".into(), status: 503, message: m(), attempts: 8 };
        assert_eq!((classify(&s).event, classify(&s).http_status), (Event::Unknown, Some(503)));
    }
}
