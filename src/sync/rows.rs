//! The rows of the tables the live sync writes (`purpleflea.agents.wallets`, `purpleflea.agents.escrows`,
//! `purpleflea.agents.escrow_terms`, `purpleflea.ledger.entries`, `purpleflea.ledger.gaps`), declared once:
//! the live sync builds its batches from them and reconcile reads them back with the same types. The seed's
//! sync writes wallets, escrows and transactions through its own `Synced` models (`entity.rs`).

use chrono::{DateTime, NaiveDate, Utc};

use crate::micros::Micros;
use crate::money::Usd;
use crate::sync::live::chain::GapKind;
use crate::tables::row::{Text, table_row};
use crate::tables::{ESCROW_TERMS, ESCROWS, LEDGER_ENTRIES, LEDGER_GAPS, WALLETS};

/// The direction of a ledger entry (its amount is always positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    Credit,
    Debit,
}

impl Text for EntryType {
    const WHAT: &'static str = "a ledger entry type (credit, debit)";
    fn as_str(self) -> &'static str {
        match self {
            EntryType::Credit => "credit",
            EntryType::Debit => "debit",
        }
    }
    fn parse(s: &str) -> Option<EntryType> {
        [EntryType::Credit, EntryType::Debit].into_iter().find(|t| t.as_str() == s)
    }
}

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

impl Text for GapKind {
    const WHAT: &'static str = "a ledger gap kind (window_full, chain_break)";
    fn as_str(self) -> &'static str {
        GapKind::as_str(self)
    }
    fn parse(s: &str) -> Option<GapKind> {
        [GapKind::WindowFull, GapKind::ChainBreak].into_iter().find(|k| k.as_str() == s)
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
    /// One row of `purpleflea.ledger.entries`: an entry of a held agent's ledger.
    pub struct LedgerEntryRow: LEDGER_ENTRIES, key(entry_id) {
        pub entry_id: String,
        pub agent_id: String,
        pub r#type: EntryType,
        pub amount_usd: Micros,
        pub balance_after_usd: Micros,
        pub reason: String,
        pub reference: Option<String>,
        pub service: Option<String>,
        pub created_at: DateTime<Utc>,
        pub ledger_seq: i64,
        pub created_date: NaiveDate,
        pub synced_at: DateTime<Utc>,
    }
}

impl LedgerEntryRow {
    pub fn is_debit(&self) -> bool {
        self.r#type == EntryType::Debit
    }

    /// The agent's balance right before this entry.
    pub fn balance_before(&self) -> Option<Micros> {
        if self.is_debit() {
            self.balance_after_usd.checked_add(self.amount_usd)
        } else {
            self.balance_after_usd.checked_sub(self.amount_usd)
        }
    }
}

table_row! {
    /// One row of `purpleflea.ledger.gaps`: where a sync could not read an agent's ledger whole.
    pub struct LedgerGapRow: LEDGER_GAPS, key(agent_id, after_entry_id) {
        pub agent_id: String,
        pub kind: GapKind,
        pub after_entry_id: String,
        pub after_balance_usd: Micros,
        pub before_entry_id: String,
        pub before_balance_usd: Micros,
        pub detail: String,
        pub run_id: String,
        pub detected_at: DateTime<Utc>,
    }
}
