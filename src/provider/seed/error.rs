//! The seed contract's errors (`../shared/api/purpleflea-api.md`, "Errors"): one variant per code that
//! refuses a request for good, and the transport's errors for everything else.

use crate::http::HttpError;
use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("invalid request (400): {message}")]
    InvalidRequest { message: String },
    #[error("agent not found (404): {message}")]
    AgentNotFound { message: String },
    #[error("escrow not found (404): {message}")]
    EscrowNotFound { message: String },
    #[error("insufficient funds (402): {message}")]
    InsufficientFunds { message: String },
    #[error("invalid state (409): {message}")]
    InvalidState { message: String },
    /// Our key with another body: the provider will never run this operation under this key.
    #[error("idempotency key reused with a different body (422): {message}")]
    IdempotencyKeyReused { message: String },
    #[error("{endpoint}: the API's paging cannot be followed: {detail}")]
    Paging { endpoint: String, detail: String },
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl SeedError {
    /// Read the contract's code out of an error answer; anything the contract does not define stays the
    /// transport's error (an unknown outcome).
    pub fn from_http(e: HttpError) -> SeedError {
        let HttpError::Status { code, message, .. } = &e else { return SeedError::Http(e) };
        let message = message.clone();
        match code.as_str() {
            "invalid_request" => SeedError::InvalidRequest { message },
            "agent_not_found" => SeedError::AgentNotFound { message },
            "escrow_not_found" => SeedError::EscrowNotFound { message },
            "insufficient_funds" => SeedError::InsufficientFunds { message },
            "invalid_state" => SeedError::InvalidState { message },
            "idempotency_key_reused" => SeedError::IdempotencyKeyReused { message },
            _ => SeedError::Http(e),
        }
    }

    /// The contract's error code, when the server gave one.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            SeedError::InvalidRequest { .. } => "invalid_request",
            SeedError::AgentNotFound { .. } => "agent_not_found",
            SeedError::EscrowNotFound { .. } => "escrow_not_found",
            SeedError::InsufficientFunds { .. } => "insufficient_funds",
            SeedError::InvalidState { .. } => "invalid_state",
            SeedError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            SeedError::Http(HttpError::Unauthorized { .. }) => "unauthorized",
            SeedError::Http(HttpError::KeyInUse) => "idempotency_key_in_use",
            SeedError::Http(HttpError::RateLimited { .. }) => "rate_limited",
            SeedError::Http(HttpError::Server { .. }) => "internal",
            _ => return None,
        })
    }

    /// True when a POST may have been applied although no success came back.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            SeedError::Http(e) => e.outcome_unknown(),
            _ => false,
        }
    }

    pub fn class(&self) -> crate::errors::ErrorClass {
        match self {
            SeedError::Http(e) => e.class(),
            _ => crate::errors::ErrorClass::Transient,
        }
    }
}

impl From<SeedError> for ProviderError {
    fn from(e: SeedError) -> ProviderError {
        let refused = |status, code, what, message| ProviderError::refused(status, code, what, message);
        match e {
            SeedError::InvalidRequest { message } => refused(400, "invalid_request", "invalid request", message),
            SeedError::AgentNotFound { message } => refused(404, "agent_not_found", "agent not found", message),
            SeedError::EscrowNotFound { message } => refused(404, "escrow_not_found", "escrow not found", message),
            SeedError::InsufficientFunds { message } => {
                refused(402, "insufficient_funds", "insufficient funds", message)
            }
            SeedError::InvalidState { message } => refused(409, "invalid_state", "invalid state", message),
            SeedError::IdempotencyKeyReused { message } => {
                refused(422, "idempotency_key_reused", "idempotency key reused with a different body", message)
            }
            SeedError::Paging { endpoint, detail } => ProviderError::Contract { endpoint, detail },
            SeedError::Http(e) => ProviderError::Http(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payouts::state::{Event, classify};

    #[test]
    fn final_refusals_are_rejected_and_the_rest_unknown() {
        let m = || "m".to_string();
        let seed = |e: SeedError| classify(&e.into());
        assert_eq!(seed(SeedError::InsufficientFunds { message: m() }).event, Event::Rejected);
        assert_eq!(seed(SeedError::AgentNotFound { message: m() }).code, "agent_not_found");
        assert_eq!(seed(SeedError::InvalidState { message: m() }).event, Event::Rejected);
        assert_eq!(seed(SeedError::InvalidRequest { message: m() }).http_status, Some(400));
        assert_eq!(seed(SeedError::Http(HttpError::KeyInUse)).event, Event::Unknown);
        let t = ProviderError::Http(HttpError::Transport {
            endpoint: "e".into(),
            detail: "d".into(),
            attempts: 3,
            connected: true,
        });
        assert_eq!((classify(&t).event, classify(&t).code.as_str()), (Event::Unknown, "transport"));
        let s = ProviderError::Http(HttpError::Server { endpoint: "e".into(), status: 503, message: m(), attempts: 8 });
        assert_eq!((classify(&s).event, classify(&s).http_status), (Event::Unknown, Some(503)));
    }
}
