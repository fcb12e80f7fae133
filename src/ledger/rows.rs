//! The rows of pfsync's ledger copy (`purpleflea.ledger.entries`, `purpleflea.ledger.gaps`), declared once:
//! the copy writes them and reconcile reads them back with the same types.

use chrono::{DateTime, NaiveDate, Utc};

use super::chain::GapKind;
use crate::micros::Micros;
use crate::tables::row::{Text, table_row};
use crate::tables::{LEDGER_ENTRIES, LEDGER_GAPS};

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
