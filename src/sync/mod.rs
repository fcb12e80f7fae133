//! Pulling the provider's state into Delta tables, by what the provider can do: from list endpoints
//! ([`Listings`]: wallets and escrows as current state, the transactions append-only, incrementally, exactly
//! once (see `tables::position`), in bounded batches), or from the held agents' own records
//! ([`HeldAgents`](crate::provider::HeldAgents), `held/`).

pub mod engine;
pub mod entity;
pub mod held;
pub mod limits;
pub mod merge;
pub mod rows;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::provider::ProviderError;
use crate::tables::TableError;

pub use engine::sync_table;
pub use entity::{Synced, WriteMode};
pub use limits::{DEFAULT_MAX_PAGES, DEFAULT_MAX_ROWS, DEFAULT_MAX_SYNC_SECS};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Row(#[from] crate::tables::row::RowError),
    #[error(
        "{table}: the API listed more than {limit} pages in one sync; a provider that never stops paging is refused, \
         nothing more was written. If the table really is that large, raise --max-pages"
    )]
    TooManyPages { table: &'static str, limit: u64 },
    #[error(
        "{table}: the API listed more than {limit} rows in one sync; refused, nothing more was written. If the \
         table really is that large, raise --max-rows"
    )]
    TooManyRows { table: &'static str, limit: u64 },
    #[error(
        "{table}: the sync did not finish within {}s (--max-sync-secs); nothing more was written, rerun to go on", limit.as_secs()
    )]
    Deadline { table: &'static str, limit: Duration },
    #[error("{table}: injected failure after {pages} pages (fault injection)")]
    Injected { table: &'static str, pages: u64 },
}

impl SyncError {
    pub fn class(&self) -> crate::errors::ErrorClass {
        use crate::errors::ErrorClass;
        match self {
            SyncError::Provider(e) => e.class(),
            SyncError::Ledger(e) => e.class(),
            SyncError::Table(e) => e.class(),
            SyncError::Write { .. } | SyncError::Injected { .. } => ErrorClass::Storage,
            // The provider served more, or slower, than a sync may take: an API failure, retried later.
            SyncError::TooManyPages { .. } | SyncError::TooManyRows { .. } | SyncError::Deadline { .. } => {
                ErrorClass::Transient
            }
            SyncError::Arrow(_) | SyncError::Row(_) => ErrorClass::Internal,
        }
    }

    pub(crate) fn write(table: &'static str, source: deltalake::DeltaTableError) -> SyncError {
        SyncError::Write { table, source: Box::new(source) }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Rows per API page (1..=1000).
    pub page_size: u32,
    /// Rows per commit: memory stays bounded by this, whatever the table's size.
    pub batch_rows: usize,
    /// Ignore the stored position and list everything (rows not listed any more are counted, kept).
    pub full: bool,
    /// Read back this far before the stored position, so rows committed late at the provider are not lost.
    pub overlap: Duration,
    /// Most pages one table's sync reads. A provider that always has one more page is refused (exit 3)
    /// instead of holding the job and committing its rows batch after batch.
    pub max_pages: u64,
    /// Most rows one table's sync reads (the same guard, for pages of any size).
    pub max_rows: u64,
    /// Longest one table's sync may take, conflict retries included; a provider that answers slowly
    /// enough never trips the caps above, this ends it.
    pub max_duration: Duration,
    /// Fault injection for tests and the simulation: fail after this many pages. Only in builds with the
    /// `test-hooks` feature: a release build cannot be told to fail.
    #[cfg(feature = "test-hooks")]
    pub fail_after_pages: Option<u64>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            page_size: 1000,
            batch_rows: 100_000,
            full: false,
            overlap: Duration::from_secs(300),
            max_pages: DEFAULT_MAX_PAGES,
            max_rows: DEFAULT_MAX_ROWS,
            max_duration: Duration::from_secs(DEFAULT_MAX_SYNC_SECS),
            #[cfg(feature = "test-hooks")]
            fail_after_pages: None,
        }
    }
}

/// What one table's sync did; printed as one line at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub table: &'static str,
    pub full: bool,
    /// Where an incremental sync started reading (stored position less the overlap).
    pub since: Option<DateTime<Utc>>,
    pub pages: u64,
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Rows the table holds that a full listing did not return (kept; see the README).
    pub missing: u64,
    pub version: Option<u64>,
    pub elapsed: Duration,
    /// Live ledgers: gaps found (entries the provider no longer lists), each recorded in
    /// `purpleflea.ledger.gaps` for reconcile to report as `ledger_gap`.
    pub gaps: u64,
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.version.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let mode = match (self.full, self.since) {
            (true, _) | (false, None) => "full".to_string(),
            (false, Some(s)) => format!("since {}", s.format("%Y-%m-%dT%H:%M:%SZ")),
        };
        write!(
            f,
            "{} ({mode}): read {} rows in {} pages, inserted {}, updated {}, unchanged {}, failed {}",
            self.table, self.rows_read, self.pages, self.inserted, self.updated, self.unchanged, self.failed
        )?;
        if self.missing > 0 {
            write!(f, ", no longer listed {}", self.missing)?;
        }
        if self.gaps > 0 {
            write!(f, ", ledger gaps {}", self.gaps)?;
        }
        write!(f, "; table version {version} ({:.1}s)", self.elapsed.as_secs_f64())
    }
}
