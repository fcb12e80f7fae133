//! What providers report, in provider-neutral records: the seed's wallets, escrows and transactions (the
//! shapes of pfsync's synced tables), and what a provider that lists nothing answers about the agents
//! whose keys pfsync holds (balances, ledger windows, escrows by id). Where a provider's wire format is
//! exactly one of these, it decodes into it directly; `serde` names follow that wire format.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::micros::Micros;
use crate::money::Usd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub agent_id: String,
    pub wallet_address: Option<String>,
    pub balance_usd: Usd,
    pub active_escrow_count: i32,
    pub total_earned_usd: Usd,
    pub referral_code: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscrowStatus {
    Funded,
    Released,
    Refunded,
}

impl EscrowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowStatus::Funded => "funded",
            EscrowStatus::Released => "released",
            EscrowStatus::Refunded => "refunded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escrow {
    pub escrow_id: String,
    pub buyer_agent_id: String,
    pub seller_agent_id: String,
    pub amount_usd: Usd,
    pub description: String,
    #[serde(default)]
    pub metadata: Option<Value>,
    pub status: EscrowStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub tx_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    Payout,
    EscrowLock,
    EscrowRelease,
    EscrowRefund,
    Faucet,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Payout => "payout",
            TxKind::EscrowLock => "escrow_lock",
            TxKind::EscrowRelease => "escrow_release",
            TxKind::EscrowRefund => "escrow_refund",
            TxKind::Faucet => "faucet",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub tx_id: String,
    pub kind: TxKind,
    pub agent_id: String,
    pub counterparty_agent_id: Option<String>,
    pub amount_usd: Usd,
    pub idempotency_key: Option<String>,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A page whose rows were decoded one by one.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<Result<T, RowError>>,
    pub next_cursor: Option<String>,
    /// Fields the first row carried that the contract does not define (ignored, reported for logging).
    pub unknown_fields: Vec<String>,
}

/// A row the API sent that does not fit the contract: which row (when its id could be read) and why,
/// naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity} {id}: {reason}")]
pub struct RowError {
    pub entity: &'static str,
    pub id: String,
    pub reason: String,
}

/// Query of the three list endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `updated_since` for wallets and escrows, `since` for transactions.
    pub since: Option<DateTime<Utc>>,
    /// Transactions only.
    pub idempotency_key: Option<String>,
}

/// One entry of an agent's ledger, as a provider without list endpoints answers it (Purple Flea's casino:
/// `GET /auth/ledger`, the key owner's newest entries by whole second). Every balance change writes one,
/// with the balance after it: the `balance_after` chain orders entries and shows a gap between two reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub id: String,
    pub agent_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: Micros,
    pub balance_after: Micros,
    pub reason: String,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

impl LedgerEntry {
    pub fn is_debit(&self) -> bool {
        self.kind == "debit"
    }

    /// The balance before this entry, from the one after it.
    pub fn balance_before(&self) -> Option<Micros> {
        if self.is_debit() {
            self.balance_after.checked_add(self.amount)
        } else {
            self.balance_after.checked_sub(self.amount)
        }
    }
}

/// An escrow read by its id, as a provider without list endpoints answers it (Purple Flea's escrow
/// service: `GET /escrow/{id}`, no auth needed). Timestamps are kept as the provider wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscrowRecord {
    pub escrow_id: String,
    pub status: String,
    pub amount_usd: Micros,
    pub commission_usd: Micros,
    pub net_to_counterparty: Micros,
    pub description: String,
    pub creator_id: String,
    pub counterparty_id: String,
    pub timeout_hours: i64,
    pub created_at: String,
    pub auto_release_at: String,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub released_at: Option<String>,
    #[serde(default)]
    pub disputed_at: Option<String>,
}

/// A held agent's wallet, as a provider that answers each agent only to its own key reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentWallet {
    pub agent_id: String,
    pub balance: Micros,
    pub referral_code: Option<String>,
    pub total_deposited: Option<Micros>,
    pub total_withdrawn: Option<Micros>,
}

/// A row's id as it may appear in a message or a log line: clipped to 128 characters and escaped, so an
/// id from the API cannot break a line or hide a NUL (`agent-2\0\n../../x` is shown as typed here).
pub fn shown_id(id: &str) -> String {
    let mut s: String = id.chars().take(128).flat_map(char::escape_debug).collect();
    if id.chars().nth(128).is_some() {
        s.push_str("...");
    }
    s
}
