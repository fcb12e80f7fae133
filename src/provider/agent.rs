//! What agent-facing tools (`pfsync mcp`) ask of a provider beyond the engine's operations: the faucet, and
//! the counterparty's "task done" step of an escrow. Neither is an operation of the payout engine: a faucet
//! claim is paid by the platform (not the treasury), and completing an escrow moves no money. Each is
//! exactly once by what the provider declares ([`Capabilities`](super::Capabilities)):
//!
//! - `faucet_once_per_agent`: the provider credits a faucet claim at most once per agent and refuses every
//!   later one (the seed's contract: 409 `invalid_state`; the live faucet: 409 `already_claimed`). A claim
//!   whose outcome is unknown may therefore be sent again: the worst a resend meets is "already claimed".
//!   Where the provider also keeps idempotency keys, the resend under the same key replays the first answer.
//! - `escrow_completion`: the provider's escrows have a complete step (live: `funded -> completed`, by the
//!   counterparty's key); its state machine refuses a second complete (409), so a resend cannot do more.

use crate::micros::Micros;

/// A faucet claim the provider credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaucetClaim {
    pub agent_id: String,
    pub amount: Micros,
    /// The provider's reference of the credit (the seed's `tx_id`, the live faucet's `claim_id`).
    pub claim_id: Option<String>,
    /// The answer came from the provider's memory of an earlier send under the same key: this send credited
    /// nothing.
    pub replayed: bool,
}

/// What a faucet claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaucetAnswer {
    Credited(FaucetClaim),
    /// The agent has claimed before (by an earlier request, at registration, or by anyone): nothing was
    /// credited now. The provider's words.
    AlreadyClaimed {
        message: String,
    },
}

/// An escrow after its counterparty's complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub escrow_id: String,
    /// `completed`, or a later state the completed escrow has moved on to (`released`).
    pub status: String,
    pub counterparty_id: String,
    pub completed_at: Option<String>,
    /// It was completed before this call (by an earlier attempt, or by the counterparty itself).
    pub already: bool,
}

#[cfg(test)]
mod tests {
    use crate::provider::ProviderError;
    use crate::provider::live::error::refusal;
    use crate::provider::live::wire::FaucetCredited;

    /// The live faucet's refusals are final refusals in its own words (what `claim_faucet` maps to "already
    /// claimed"), and its answer is read exactly, `_info` and all.
    #[test]
    fn the_live_faucets_answers_decode() {
        let e = refusal("POST /faucet/claim", 409, "already_claimed", "claimed before".into());
        assert!(
            matches!(e, ProviderError::Refused { status: 409, ref code, .. } if code == "already_claimed"),
            "{e:?}"
        );
        let e = refusal("POST /faucet/claim", 403, "has_deposits", String::new());
        assert!(matches!(e, ProviderError::Refused { ref code, .. } if code == "has_deposits"), "{e:?}");
        let a: FaucetCredited = serde_json::from_str(
            r#"{"credited":1.0,"message":"Free $1","claim_id":"c-1","agent_id":"ag_0123456789ab","referral_tracked":false,"_info":{}}"#,
        )
        .unwrap();
        assert_eq!(a.credited, crate::micros::Micros::parse("1").unwrap());
        assert_eq!(a.claim_id.as_deref(), Some("c-1"));
    }
}
