//! The bounds of a reconcile run, a leaf the CLI reads for its defaults.

/// Memory a rebuild's queries may hold, in MiB, before they spill to disk. With what the process holds
/// besides (the writers' buffers, the tables' logs) a rebuild of 10 million operations stays under 1.5 GiB
/// (BENCHMARKS.md).
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 512;

/// How many rows (appended log events and transactions, and stored rows read back) a run that reads only
/// what changed holds in memory at most, about half a kilobyte each; beyond it the run rebuilds instead,
/// which streams and spills.
pub const MAX_INCREMENTAL_ROWS: u64 = 1_000_000;
