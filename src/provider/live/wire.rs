//! What Purple Flea's live services answer, as far as pfsync reads it. Fields pfsync does not use are
//! ignored (every answer also carries an `_info` object); amounts are read exactly ([`Micros`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::micros::Micros;
pub use crate::provider::records::{EscrowRecord, LedgerEntry};

/// `GET /auth/balance`.
#[derive(Debug, Clone, Deserialize)]
pub struct Balance {
    pub agent_id: String,
    pub balance_usd: Micros,
    #[serde(default)]
    pub lifetime: Option<Lifetime>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Lifetime {
    #[serde(default)]
    pub total_deposited: Option<Micros>,
    #[serde(default)]
    pub total_withdrawn: Option<Micros>,
}

/// `GET /auth/referral/code`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferralCode {
    pub referral_code: String,
}

/// `GET /auth/ledger`: the key owner's last 50 entries, newest first by whole second.
#[derive(Debug, Clone, Deserialize)]
pub struct Ledger {
    pub entries: Vec<LedgerEntry>,
}

/// `POST /stats/pay`.
#[derive(Debug, Serialize)]
pub struct PayRequest<'a> {
    pub to_agent_id: &'a str,
    pub amount: Box<RawValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PayAnswer {
    pub tx_id: String,
}

/// `POST /escrow/create`.
#[derive(Debug, Serialize)]
pub struct EscrowCreateRequest<'a> {
    pub amount_usd: Box<RawValue>,
    pub description: &'a str,
    pub counterparty_agent_id: &'a str,
    pub timeout_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EscrowCreated {
    pub escrow_id: String,
}

/// `POST /escrow/dispute/{id}`.
#[derive(Debug, Serialize)]
pub struct DisputeRequest<'a> {
    pub reason: &'a str,
}

/// `POST /faucet/claim` of the faucet service (no key).
#[derive(Debug, Serialize)]
pub struct FaucetClaimRequest<'a> {
    pub agent_casino_id: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FaucetCredited {
    pub credited: Micros,
    #[serde(default)]
    pub claim_id: Option<String>,
    pub agent_id: String,
}

/// Any answer whose body pfsync does not need beyond success.
#[derive(Debug, Clone, Deserialize)]
pub struct Ack {}
