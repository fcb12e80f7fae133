//! pfsync's copy of the held agents' ledgers (`purpleflea.ledger.entries`, with `purpleflea.ledger.gaps`):
//! for a provider that answers only each agent's newest entries ([`HeldAgents`]), this copy is the only
//! lasting record of what moved. Sync appends to it, and so does the payout engine around every batch it
//! sends, so that a batch never writes more entries than one read can see (the copy has no gap of
//! pfsync's own making) and the evidence about an unknown outcome can be read from it.
//!
//! - `chain.rs`: pure: a window ordered along the `balance_after` chain, what is new, where it breaks;
//! - `copy.rs`: read every held agent's window and append what is new, gaps first;
//! - `history.rs`: an agent's copied ledger read back as evidence, as far as it is one unbroken chain.

pub mod chain;
pub mod copy;
pub mod history;
pub mod rows;

use std::time::Duration;

pub use copy::copy_ledgers;

use crate::provider::{HeldAgents, ProviderError};
use crate::tables::TableError;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{table}: {detail}")]
    Row { table: &'static str, detail: String },
    #[error(transparent)]
    Rows(#[from] crate::tables::row::RowError),
}

impl LedgerError {
    pub(crate) fn write(table: &'static str, source: deltalake::DeltaTableError) -> LedgerError {
        LedgerError::Write { table, source: Box::new(source) }
    }

    pub fn class(&self) -> crate::errors::ErrorClass {
        use crate::errors::ErrorClass;
        match self {
            LedgerError::Provider(e) => e.class(),
            LedgerError::Table(e) => e.class(),
            LedgerError::Write { .. } | LedgerError::Row { .. } | LedgerError::Rows(_) => ErrorClass::Storage,
            LedgerError::Arrow(_) => ErrorClass::Internal,
        }
    }

    /// Another writer committed first (a concurrent copy): planning again is safe.
    pub fn is_conflict(&self) -> bool {
        matches!(self, LedgerError::Write { source, .. } if crate::tables::position::is_conflict(source))
    }
}

/// What one copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerCopy {
    /// Windows read (one per held agent).
    pub windows: u64,
    pub entries_read: u64,
    pub inserted: u64,
    /// Entries of the windows the copy held already.
    pub known: u64,
    /// Entries refused by the row checks (logged).
    pub failed: u64,
    /// Gaps found, each recorded in `purpleflea.ledger.gaps`.
    pub gaps: u64,
    pub version: Option<u64>,
    pub elapsed: Duration,
}

/// The held agents of a provider, if it is one that answers only those.
pub fn held(provider: &dyn crate::provider::Provider) -> Option<&dyn HeldAgents> {
    provider.held_agents()
}
