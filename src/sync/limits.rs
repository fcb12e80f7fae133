//! The default bounds of one table's sync (the CLI's defaults too).

/// Default bounds of one table's sync: far above the largest table a run is expected to read (100M rows
/// at the maximum page size), so they only ever stop a provider that keeps paging.
pub const DEFAULT_MAX_PAGES: u64 = 100_000;
pub const DEFAULT_MAX_ROWS: u64 = 100_000_000;
pub const DEFAULT_MAX_SYNC_SECS: u64 = 4 * 3600;
