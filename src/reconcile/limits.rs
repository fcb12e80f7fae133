//! The bounds of a reconcile run, a leaf the CLI reads for its defaults.

/// Memory a rebuild's queries may hold, in MiB, before they spill to disk. A rebuild splits a large history
/// into passes budgeted at half of it each (`passes.rs`): in one pass, 10 million operations needed about
/// 2 GiB (the sorts that finish in memory keep their output there while the sort-merge joins read it) and
/// 1,280 MiB ran out; in 10 passes under this default they peaked at 1,344 MiB of process memory
/// (BENCHMARKS.md).
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 1024;

/// How many rows (appended log events and transactions, and stored rows read back) a run that reads only
/// what changed holds in memory at most, about half a kilobyte each; beyond it the run rebuilds instead,
/// which streams and spills.
pub const MAX_INCREMENTAL_ROWS: u64 = 1_000_000;
