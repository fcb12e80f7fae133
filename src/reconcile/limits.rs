//! The bounds of a reconcile run, a leaf the CLI reads for its defaults.

/// Memory a rebuild's queries may hold, in MiB, before they spill to disk. Measured (BENCHMARKS.md): with
/// 2 GiB a rebuild of 10 million operations peaked at 2.1 to 2.3 GiB of process memory; with 512 MiB one of 3
/// million fails, since the sorts that finish in memory keep their output there while the sort-merge joins
/// read it, and the aggregation after them is left too little to start even its spilling.
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 2048;

/// How many rows (appended log events and transactions, and stored rows read back) a run that reads only
/// what changed holds in memory at most, about half a kilobyte each; beyond it the run rebuilds instead,
/// which streams and spills.
pub const MAX_INCREMENTAL_ROWS: u64 = 1_000_000;
