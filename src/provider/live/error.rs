//! The live services' errors: their 4xx codes that refuse a request for good, and the transport's errors
//! for everything else. Their 5xx codes (`debit_failed`, `release_failed`, `internal_error`) say nothing
//! certain about what ran: those stay unknown outcomes, with the code kept (`HttpError::code`).

use crate::http::HttpError;
use crate::provider::ProviderError;

/// The live services' 4xx codes that refuse an operation for good: nothing ran, and the same request
/// would be refused again.
pub const REFUSALS: &[&str] = &[
    "invalid_amount",
    "same_agent",
    "insufficient_balance",
    "recipient_not_found",
    "invalid_description",
    "invalid_counterparty",
    "self_escrow",
    "counterparty_not_found",
    "creator_not_found",
    "not_found",
    "forbidden",
    "invalid_status",
    // The live faucet: the agent claimed before; it has made a deposit (faucet only for new agents).
    "already_claimed",
    "has_deposits",
];

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A final refusal in the services' own words.
    #[error("refused ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("{0}")]
    Setting(String),
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl LiveError {
    /// Read a refusal code out of an error answer; any other answer stays the transport's error (an
    /// unknown outcome: a code pfsync does not know may have run).
    pub fn from_http(e: HttpError) -> LiveError {
        match e {
            HttpError::Status { status: status @ 400..=499, code, message, .. }
                if REFUSALS.contains(&code.as_str()) =>
            {
                LiveError::Refused { status, code, message }
            }
            other => LiveError::Http(other),
        }
    }
}

impl From<LiveError> for ProviderError {
    fn from(e: LiveError) -> ProviderError {
        match e {
            LiveError::Refused { status, code, message } => {
                ProviderError::Refused { status, code, what: "refused", message }
            }
            LiveError::Setting(m) => ProviderError::Setting(m),
            LiveError::Http(e) => ProviderError::Http(e),
        }
    }
}

/// What a live service's error answer means, as the engine sees it.
pub fn refusal(endpoint: &str, status: u16, code: &str, message: String) -> ProviderError {
    let e = HttpError::Status { endpoint: endpoint.to_string(), status, code: code.to_string(), message };
    LiveError::from_http(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payouts::state::{Event, classify};

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
            let e = refusal("POST /stats/pay", status, code, "m".into());
            let f = classify(&e);
            assert_eq!(
                (f.event, f.code.as_str(), f.http_status),
                (Event::Rejected, code, Some(status as i32)),
                "{code}"
            );
        }
        // Their 5xx: the operation may have run (release_failed after the credit): unknown, code kept.
        let s = ProviderError::Http(HttpError::Server {
            endpoint: "e".into(),
            status: 500,
            message: "release_failed: Contact support.".into(),
            attempts: 1,
        });
        assert_eq!((classify(&s).event, classify(&s).code.as_str()), (Event::Unknown, "release_failed"));
        let plain = ProviderError::Http(HttpError::Server {
            endpoint: "e".into(),
            status: 502,
            message: "<html>bad gateway".into(),
            attempts: 1,
        });
        assert_eq!(classify(&plain).code, "internal");
        // A code the client does not know stays an unexpected answer: unknown, never a rejection.
        let odd = refusal("e", 418, "teapot", "m".into());
        assert_eq!(classify(&odd).event, Event::Unknown);
    }
}
