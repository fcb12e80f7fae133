//! Typed errors of the Purple Flea client, one variant per contract error code plus what can go wrong on
//! the wire. Messages never carry the API key or request headers.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("refused {url}: plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost); use https")]
    InsecureUrl { url: String },
    #[error(
        "refused {url}: a user name or password in the URL would be sent and shown; give the key through PURPLEFLEA_API_KEY or --api-key-file"
    )]
    CredentialsInUrl { url: String },
    #[error("invalid API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid client setting: {0}")]
    BadSetting(String),
    #[error("invalid idempotency key: {0}")]
    BadIdempotencyKey(String),
    #[error("the API refused the key (401 unauthorized): check PURPLEFLEA_API_KEY or --api-key-file")]
    Unauthorized,
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
    #[error("idempotency key in use (409): another request with this key is still running")]
    IdempotencyKeyInUse,
    #[error("idempotency key reused with a different body (422): {message}")]
    IdempotencyKeyReused { message: String },
    /// A final refusal in a provider's own words (Purple Flea's live services: `insufficient_balance`,
    /// `recipient_not_found`, `invalid_status`, `forbidden`, ...): the operation did not run and will not.
    #[error("refused ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("{endpoint}: still rate limited (429) after {attempts} attempts")]
    RateLimited { endpoint: String, attempts: u32 },
    #[error("{endpoint}: server error {status} after {attempts} attempts: {message}")]
    Server { endpoint: String, status: u16, message: String, attempts: u32 },
    #[error("{endpoint}: no complete answer after {attempts} attempts ({detail})")]
    Transport { endpoint: String, detail: String, attempts: u32, connected: bool },
    #[error("{endpoint}: response (status {status}) does not follow the contract: {detail}")]
    Decode { endpoint: String, status: u16, detail: String },
    #[error("{endpoint}: the API's paging cannot be followed: {detail}")]
    Paging { endpoint: String, detail: String },
    #[error("{endpoint}: response body is larger than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize },
    #[error("{endpoint}: unexpected status {status}: {detail}")]
    Unexpected { endpoint: String, status: u16, detail: String },
    #[error("gave up on {endpoint} after {elapsed:?} (max elapsed) and {attempts} attempts: {last}")]
    GaveUp { endpoint: String, elapsed: Duration, attempts: u32, last: String },
}

/// The live services' 4xx codes that refuse an operation for good: nothing ran, and the same request
/// would be refused again. (Their 5xx codes, `debit_failed`, `release_failed`, `internal_error`, say
/// nothing certain about what ran: those stay unknown outcomes.)
pub const LIVE_REFUSALS: &[&str] = &[
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

impl ApiError {
    /// Usage for what the user set wrong, Refused for a key the provider will not take, Transient for the
    /// rest (the provider was unreachable, failing, or answered what the contract does not allow).
    pub fn class(&self) -> crate::errors::ErrorClass {
        use crate::errors::ErrorClass;
        match self {
            ApiError::InsecureUrl { .. }
            | ApiError::CredentialsInUrl { .. }
            | ApiError::BadUrl { .. }
            | ApiError::BadSetting(_) => ErrorClass::Usage,
            ApiError::BadIdempotencyKey(_) => ErrorClass::Internal,
            ApiError::Unauthorized => ErrorClass::Refused,
            _ => ErrorClass::Transient,
        }
    }

    /// The contract's error code, when the server gave one.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::AgentNotFound { .. } => "agent_not_found",
            ApiError::EscrowNotFound { .. } => "escrow_not_found",
            ApiError::InsufficientFunds { .. } => "insufficient_funds",
            ApiError::InvalidState { .. } => "invalid_state",
            ApiError::IdempotencyKeyInUse => "idempotency_key_in_use",
            ApiError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Server { .. } => "internal",
            _ => return None,
        })
    }

    /// True when a POST may have been applied even though no success came back: the caller must resolve
    /// it by lookup (or a resend with the same key), never treat it as failed.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::Transport { connected, .. } => *connected,
            ApiError::Server { .. }
            | ApiError::Decode { .. }
            | ApiError::TooLarge { .. }
            | ApiError::IdempotencyKeyInUse
            | ApiError::GaveUp { .. }
            | ApiError::Unexpected { .. } => true,
            _ => false,
        }
    }

    /// Map a contract error body to its variant.
    pub(crate) fn from_code(endpoint: &str, status: u16, code: &str, message: String) -> ApiError {
        match (status, code) {
            (401, _) | (_, "unauthorized") => ApiError::Unauthorized,
            (_, "invalid_request") => ApiError::InvalidRequest { message },
            (_, "agent_not_found") => ApiError::AgentNotFound { message },
            (_, "escrow_not_found") => ApiError::EscrowNotFound { message },
            (_, "insufficient_funds") => ApiError::InsufficientFunds { message },
            (_, "invalid_state") => ApiError::InvalidState { message },
            (_, "idempotency_key_in_use") => ApiError::IdempotencyKeyInUse,
            (_, "idempotency_key_reused") => ApiError::IdempotencyKeyReused { message },
            (400..=499, c) if LIVE_REFUSALS.contains(&c) => ApiError::Refused { status, code: c.to_string(), message },
            _ => ApiError::Unexpected { endpoint: endpoint.to_string(), status, detail: format!("{code}: {message}") },
        }
    }
}
