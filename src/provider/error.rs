//! The one error type every provider's calls end in, whatever the provider's own contract calls things.
//! Each provider keeps its own error type (its contract's codes, `seed::SeedError`, `live::LiveError`) and
//! maps it here into the classes the engine acts on: refused for good, the key refused, a setting of ours,
//! or anything else, which says nothing certain about what ran.

use crate::errors::ErrorClass;
use crate::http::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A final refusal in the provider's own words: the request did not run, and the same request would
    /// be refused again (insufficient funds, an unknown agent, an escrow in the wrong state).
    #[error("{what} ({status} {code}): {message}")]
    Refused { status: u16, code: String, what: &'static str, message: String },
    /// Anything the transport reports, the provider's refusal of our key included (see
    /// [`ProviderError::key_refused`]): a 5xx, a timeout, a lost or unreadable answer may all have run.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A setting of ours that this provider cannot work with; nothing was sent.
    #[error("{0}")]
    Setting(String),
    /// The provider answered what its contract does not allow (a page it cannot follow, a row it gave
    /// twice); nothing certain about what ran.
    #[error("{endpoint}: {detail}")]
    Contract { endpoint: String, detail: String },
}

/// What a failed money request means for its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused for good: nothing ran, nothing will under this operation.
    Rejected,
    /// It may have run, or may run if sent again: only the provider's evidence can tell.
    Unknown,
}

impl ProviderError {
    pub fn refused(status: u16, code: &str, what: &'static str, message: String) -> ProviderError {
        ProviderError::Refused { status, code: code.to_string(), what, message }
    }

    /// What this error means for an operation that was being sent.
    pub fn verdict(&self) -> Verdict {
        match self {
            ProviderError::Refused { .. } => Verdict::Rejected,
            _ => Verdict::Unknown,
        }
    }

    /// The provider refused our key: the run stops (every later request would be refused too).
    pub fn key_refused(&self) -> bool {
        matches!(self, ProviderError::Http(HttpError::Unauthorized { .. }))
    }

    /// The code an auditor reads in the log's `error_code`: the provider's own where it gave one.
    pub fn code(&self) -> String {
        match self {
            ProviderError::Refused { code, .. } => code.clone(),
            ProviderError::Http(e) => e.code(),
            ProviderError::Setting(_) => "unexpected".into(),
            ProviderError::Contract { .. } => "malformed_response".into(),
        }
    }

    /// The HTTP status the provider answered with, when there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ProviderError::Refused { status, .. } => Some(*status),
            ProviderError::Http(e) => e.status(),
            _ => None,
        }
    }

    /// For the exit code: a setting is the user's to fix, a refused key the provider's, the rest passes.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Http(e) => e.class(),
            ProviderError::Setting(_) => ErrorClass::Usage,
            ProviderError::Refused { .. } | ProviderError::Contract { .. } => ErrorClass::Transient,
        }
    }

    /// True when a request may have been applied although no success came back.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ProviderError::Http(e) => e.outcome_unknown(),
            ProviderError::Contract { .. } => true,
            ProviderError::Refused { .. } | ProviderError::Setting(_) => false,
        }
    }
}
