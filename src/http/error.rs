//! What can go wrong on the wire, for any provider or service: a refused URL or setting, a key the server
//! would not take, an answer that is an error in the server's own words, or no usable answer at all.
//! What an error *means* for an operation (refused for good, or an outcome nobody knows) is each
//! provider's to say (`provider::*::error`), from its own contract. Messages never carry a key or a header.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
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
    /// 401: the server did not take the key (`what` says which key, for the message).
    #[error("the API refused the key (401 unauthorized): check {what}")]
    Unauthorized { what: String },
    /// A non-2xx answer with an error body (`{"error": code, "message": ...}`): the server's own refusal,
    /// which the provider's contract interprets.
    #[error("{endpoint}: {status} {code}: {message}")]
    Status { endpoint: String, status: u16, code: String, message: String },
    /// 409 `idempotency_key_in_use`, still so after the retries: another request with this key is running.
    #[error("idempotency key in use (409): another request with this key is still running")]
    KeyInUse,
    #[error("{endpoint}: still rate limited (429) after {attempts} attempts")]
    RateLimited { endpoint: String, attempts: u32 },
    #[error("{endpoint}: server error {status} after {attempts} attempts: {message}")]
    Server { endpoint: String, status: u16, message: String, attempts: u32 },
    #[error("{endpoint}: no complete answer after {attempts} attempts ({detail})")]
    Transport { endpoint: String, detail: String, attempts: u32, connected: bool },
    #[error("{endpoint}: response (status {status}) does not follow the contract: {detail}")]
    Decode { endpoint: String, status: u16, detail: String },
    #[error("{endpoint}: response body is larger than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize },
    #[error("{endpoint}: unexpected status {status}: {detail}")]
    Unexpected { endpoint: String, status: u16, detail: String },
    #[error("gave up on {endpoint} after {elapsed:?} (max elapsed) and {attempts} attempts: {last}")]
    GaveUp { endpoint: String, elapsed: Duration, attempts: u32, last: String },
}

impl HttpError {
    /// Usage for what the user set wrong, Refused for a key the server will not take, Transient for the
    /// rest (the server was unreachable, failing, or answered what its contract does not allow).
    pub fn class(&self) -> crate::errors::ErrorClass {
        use crate::errors::ErrorClass;
        match self {
            HttpError::InsecureUrl { .. }
            | HttpError::CredentialsInUrl { .. }
            | HttpError::BadUrl { .. }
            | HttpError::BadSetting(_) => ErrorClass::Usage,
            HttpError::Unauthorized { .. } => ErrorClass::Refused,
            _ => ErrorClass::Transient,
        }
    }

    /// True when a POST may have been applied even though no success came back: the caller must resolve
    /// it from the provider's evidence, never treat it as failed.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            HttpError::Transport { connected, .. } => *connected,
            HttpError::Server { .. }
            | HttpError::Decode { .. }
            | HttpError::TooLarge { .. }
            | HttpError::KeyInUse
            | HttpError::GaveUp { .. }
            | HttpError::Status { .. }
            | HttpError::Unexpected { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status the server answered, when one was read.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Unauthorized { .. } => Some(401),
            HttpError::KeyInUse => Some(409),
            HttpError::RateLimited { .. } => Some(429),
            HttpError::Status { status, .. }
            | HttpError::Server { status, .. }
            | HttpError::Decode { status, .. }
            | HttpError::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short code for the log's `error_code` when the provider's contract has none for this error.
    pub fn code(&self) -> String {
        match self {
            HttpError::Unauthorized { .. } => "unauthorized".into(),
            HttpError::KeyInUse => "idempotency_key_in_use".into(),
            HttpError::RateLimited { .. } => "rate_limited".into(),
            // A server's own 5xx code (`release_failed`, `debit_failed`) is kept: it tells a person what broke.
            HttpError::Server { message, .. } => message
                .split_once(": ")
                .map(|(c, _)| c)
                .filter(|c| !c.is_empty() && c.len() <= 40 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .unwrap_or("internal")
                .to_string(),
            HttpError::Status { code, .. } => code.clone(),
            HttpError::Transport { .. } => "transport".into(),
            HttpError::Decode { .. } => "malformed_response".into(),
            HttpError::TooLarge { .. } => "response_too_large".into(),
            HttpError::GaveUp { .. } => "gave_up".into(),
            _ => "unexpected".into(),
        }
    }
}
