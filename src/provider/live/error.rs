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
