//! The default bounds of the rules step (the CLI's defaults too).

/// The default of `--rules-max-secs`: the longest the rules step reads MLflow, every rule together.
pub const DEFAULT_MAX_SECS: u64 = 120;
/// The default of `--rules-max-pages`: the most MLflow requests one rule makes in a run (its run or run
/// searches, and each page of each run's metric history).
pub const DEFAULT_MAX_PAGES: u32 = 100;
