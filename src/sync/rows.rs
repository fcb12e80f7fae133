//! The rows of the tables the held agents' sync writes (`purpleflea.agents.wallets`,
//! `purpleflea.agents.escrows`, `purpleflea.agents.escrow_terms`), declared once: the sync builds its
//! batches from them and reconcile reads them back with the same types. The seed's sync writes wallets,
//! escrows and transactions through its own `Synced` models (`entity.rs`); the ledger copy's rows are
//! `crate::ledger::rows`. `TransactionRow` reads back what the seed's sync wrote (`pfsync resolve`).

use chrono::{DateTime, NaiveDate, Utc};

use crate::micros::Micros;
use crate::money::Usd;
use crate::provider::records::TxKind;
use crate::tables::row::{Text, table_row};
use crate::tables::{ESCROW_TERMS, ESCROWS, TRANSACTIONS, WALLETS};

/// An escrow's state: the seed's `funded | released | refunded`, and the live provider's `completed` and
/// `disputed` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EscrowStatus {
    Funded,
    Completed,
    Released,
    Disputed,
    Refunded,
}

impl Text for EscrowStatus {
    const WHAT: &'static str = "an escrow status (funded, completed, released, disputed, refunded)";
    fn as_str(self) -> &'static str {
        match self {
            EscrowStatus::Funded => "funded",
            EscrowStatus::Completed => "completed",
            EscrowStatus::Released => "released",
            EscrowStatus::Disputed => "disputed",
            EscrowStatus::Refunded => "refunded",
        }
    }
    fn parse(s: &str) -> Option<EscrowStatus> {
        use EscrowStatus::*;
        [Funded, Completed, Released, Disputed, Refunded].into_iter().find(|t| t.as_str() == s)
    }
}

table_row! {
    /// One row of `purpleflea.agents.wallets` (the seed's published columns; DOUBLE where the seed says so).
    pub struct WalletRow: WALLETS, key(agent_id) {
        pub agent_id: String,
        pub wallet_address: Option<String>,
        pub balance_usd: Option<f64>,
        pub active_escrow_count: Option<i32>,
        pub total_earned_usd: Option<f64>,
        pub referral_code: Option<String>,
        pub registered_at: Option<DateTime<Utc>>,
        pub last_synced_at: Option<DateTime<Utc>>,
    }
}

table_row! {
    /// One row of `purpleflea.agents.escrows`: an escrow's current state, its amount in cents.
    pub struct EscrowRow: ESCROWS, key(escrow_id) {
        pub escrow_id: String,
        pub buyer_agent_id: String,
        pub seller_agent_id: String,
        pub amount_usd: Usd,
        pub description: Option<String>,
        pub metadata: Option<String>,
        pub status: EscrowStatus,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        pub tx_id: Option<String>,
        pub last_synced_at: Option<DateTime<Utc>>,
    }
}

table_row! {
    /// One row of `purpleflea.agents.escrow_terms`: a live escrow, its money exact to six decimals.
    pub struct EscrowTermsRow: ESCROW_TERMS, key(escrow_id) {
        pub escrow_id: String,
        pub creator_agent_id: String,
        pub counterparty_agent_id: String,
        pub status: EscrowStatus,
        pub amount_usd: Micros,
        pub commission_usd: Micros,
        pub net_to_counterparty_usd: Micros,
        pub timeout_hours: i64,
        pub created_at: DateTime<Utc>,
        pub auto_release_at: DateTime<Utc>,
        pub completed_at: Option<DateTime<Utc>>,
        pub released_at: Option<DateTime<Utc>>,
        pub disputed_at: Option<DateTime<Utc>>,
        pub last_synced_at: Option<DateTime<Utc>>,
    }
}

table_row! {
    /// One row of `purpleflea.ledger.transactions`: a provider transaction as the seed's sync copied it.
    pub struct TransactionRow: TRANSACTIONS, key(tx_id) {
        pub tx_id: String,
        pub kind: TxKind,
        pub agent_id: String,
        pub counterparty_agent_id: Option<String>,
        pub amount_usd: Usd,
        pub idempotency_key: Option<String>,
        pub reference: Option<String>,
        pub created_at: DateTime<Utc>,
        pub created_date: NaiveDate,
        pub synced_at: DateTime<Utc>,
    }
}
