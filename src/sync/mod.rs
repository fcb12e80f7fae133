//! Pulling API state into Delta tables.

pub mod wallets;

use std::fmt;
use std::time::Duration;

use crate::api::ApiError;
use crate::tables::TableError;

pub use wallets::sync_wallets;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl SyncError {
    pub(crate) fn write(table: &'static str, source: deltalake::DeltaTableError) -> SyncError {
        SyncError::Write { table, source: Box::new(source) }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Rows per API page (1..=1000).
    pub page_size: u32,
    /// Rows per Arrow batch handed to the writer.
    pub write_batch_rows: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { page_size: 1000, write_batch_rows: 65_536 }
    }
}

/// What one table's sync did; printed as one line at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub table: &'static str,
    pub pages: u64,
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub version: Option<u64>,
    pub elapsed: Duration,
}

impl SyncReport {
    pub fn new(table: &'static str) -> SyncReport {
        SyncReport { table, ..SyncReport::default() }
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.version.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        write!(
            f,
            "{}: read {} rows in {} pages, inserted {}, updated {}, unchanged {}, failed {}; table version {} ({:.1}s)",
            self.table,
            self.rows_read,
            self.pages,
            self.inserted,
            self.updated,
            self.unchanged,
            self.failed,
            version,
            self.elapsed.as_secs_f64()
        )
    }
}
