//! A refusal in the seed contract's terms, as the sandbox answers it.

use crate::text::clip;

/// Longest id (agent, escrow) the sandbox accepts.
pub const MAX_ID_LEN: usize = 128;

/// A refusal in the contract's terms: status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ContractError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ContractError {
        ContractError { status, code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> ContractError {
        ContractError::new(400, "invalid_request", message)
    }
    pub(super) fn agent_not_found(id: &str) -> ContractError {
        ContractError::new(404, "agent_not_found", format!("no agent {:?}", clip(id, MAX_ID_LEN)))
    }
    pub(super) fn escrow_not_found(id: &str) -> ContractError {
        ContractError::new(404, "escrow_not_found", format!("no escrow {:?}", clip(id, MAX_ID_LEN)))
    }
}
