//! A rebuild in passes, so its memory is a fraction of the history's. A rebuild in one pass sorts every
//! operation and every transaction for its joins, and a sort that fits in memory keeps its whole output
//! there while the join reads it: at 10 million operations that needs about 2 GiB whatever the memory
//! limit (BENCHMARKS.md). Here the history is split into buckets and the same SQL of `sql/reconcile/` runs
//! once per bucket, over just the rows that bucket's answer depends on:
//!
//! 1. **The operations, by key.** The status view runs once per bucket of operation ids (every event of an
//!    operation lands in the same bucket, so each pass aggregates whole operations), and each operation is
//!    written to a local Parquet file of its *key's* bucket (an operation with no key goes by its id), with
//!    the bucket of its agent beside it.
//! 2. **`classified.sql` per key bucket**, over that bucket's operations and the transactions that can touch
//!    them: those whose key falls in the bucket (every transaction carrying one of these operations' keys,
//!    so the per-key counts are whole) and those whose id one of these operations' log names. Each operation
//!    is in exactly one bucket, so each of its rows is computed once, from all the rows it depends on.
//! 3. **`unclaimed_transactions.sql` per bucket**, over the transactions whose key falls in the bucket and
//!    the keyless ones whose agent does, against the operations of the same key bucket or agent bucket: a key
//!    no operation carries is decided among the operations of its bucket, and a keyless payout is compared
//!    with every operation of its agent.
//!
//! The SQL files are unchanged: each pass renames the whole tables and puts views of the bucket's rows under
//! their names. A property test (tests/it/reconcile_incremental.rs) holds the classification from passes
//! equal to the one from a single pass, row for row. The bucket files live in a temporary folder (TMPDIR, as
//! the spills do) that is removed when the rebuild ends; a process killed mid-way leaves it behind there.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::ReconcileError;
use super::matching::{self, CLASSIFIED, Params, Query, UNCLAIMED_TRANSACTIONS};
use crate::tables::store::VIEWS;

/// Query memory a pass is budgeted per logged event. Measured at 10 million operations (20 million events,
/// BENCHMARKS.md): in one pass 1,280 MiB ran out and 2,048 MiB finished; under 1,024 MiB, 5 passes finished at
/// a peak RSS of 1,705 MiB and 10 passes at 1,344 MiB; under 512 MiB, 10 and 20 passes ran out (a sort that
/// fits in memory holds its output there, so a pass that just fits needs more than one that spills).
pub const BYTES_PER_EVENT: u64 = 256;

/// More passes than this only add scans: each pass reads every transaction.
pub const MAX_PASSES: u32 = 256;

const LOG: &str = "purpleflea.payouts.log";
const TRANSACTIONS: &str = "purpleflea.ledger.transactions";
const STATUS: &str = "purpleflea.payouts.status";
const ALL_LOG: &str = "pfsync_rebuild_all_log";
const ALL_TRANSACTIONS: &str = "pfsync_rebuild_all_transactions";
const OPS: &str = "pfsync_rebuild_operations";
const BUCKET_FN: &str = "pfsync_bucket";
const LOGGED_TX_FN: &str = "pfsync_logged_tx";
const KEY_BUCKET: &str = "pfsync_key_bucket";
const AGENT_BUCKET: &str = "pfsync_agent_bucket";
/// Rows per row group of the bucket files: small, so a writer holds little before it writes.
const ROW_GROUP_ROWS: usize = 32 * 1024;

/// How many passes a rebuild of `events` logged events takes under `memory_limit` bytes: enough that each
/// pass needs at most half the limit (the other half is for what the estimate misses).
pub fn count(events: u64, memory_limit: usize) -> u32 {
    let per_pass = (memory_limit as u64 / 2).max(1);
    let passes = events.saturating_mul(BYTES_PER_EVENT).div_ceil(per_pass);
    u32::try_from(passes).unwrap_or(MAX_PASSES).clamp(1, MAX_PASSES)
}

/// The bucket of `text` among `passes`: a stable hash (the same in every run and on every machine).
pub fn bucket(text: &str, passes: u32) -> u32 {
    // `passes` is at least 1, and the remainder is below it, so it fits.
    (crate::rng::hash_bytes(0, text.as_bytes()) % u64::from(passes.max(1))) as u32
}

fn failed(query: &'static str) -> impl Fn(datafusion::error::DataFusionError) -> ReconcileError {
    move |source| ReconcileError::Query { query, source: Box::new(source) }
}

fn files_failed<E: std::error::Error + Send + Sync + 'static>(dir: &Path) -> impl FnOnce(E) -> ReconcileError {
    let path = dir.display().to_string();
    move |e| ReconcileError::BucketFiles { path, source: Box::new(e) }
}

/// A function of one string column (of any string type), computed array by array with `f`.
fn string_udf<A: Array + 'static>(
    name: &str,
    returns: DataType,
    f: impl Fn(&arrow::array::StringArray) -> A + Send + Sync + 'static,
) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        returns,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            Ok(ColumnarValue::Array(Arc::new(f(text.as_string::<i32>()))))
        }),
    )
}

/// `pfsync_bucket(text)`: [`bucket`] of a string column, a NULL taken as the empty string.
fn bucket_udf(passes: u32) -> ScalarUDF {
    string_udf(BUCKET_FN, DataType::UInt32, move |text| {
        text.iter().map(|t| Some(bucket(t.unwrap_or(""), passes))).collect::<UInt32Array>()
    })
}

/// `pfsync_logged_tx(tx_id)`: whether a pass's operations name this transaction id in their log.
fn logged_tx_udf(ids: Arc<HashSet<String>>) -> ScalarUDF {
    string_udf(LOGGED_TX_FN, DataType::Boolean, move |text| {
        text.iter().map(|t| Some(t.is_some_and(|t| ids.contains(t)))).collect::<BooleanArray>()
    })
}

/// The status view's rows, as the first phase of a rebuild in passes reads them (named in its errors).
pub const SPLIT: Query =
    Query { file: "sql/views/purpleflea.payouts.status.sql", sql: "SELECT * FROM purpleflea.payouts.status" };

/// Every operation's status, split into one Parquet file per key bucket, and the session's tables renamed
/// so each pass can put its bucket's rows under their names. [`Split::finish`] puts the tables back.
pub struct Split<'a> {
    ctx: &'a SessionContext,
    dir: TempDir,
    operations: u64,
}

/// A folder removed when dropped (`tempfile` is a test-only dependency; this is all the rebuild needs of it).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, ReconcileError> {
        let path = std::env::temp_dir().join(format!("pfsync-rebuild-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).map_err(files_failed(&path))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: what is left is in TMPDIR, with the spills.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl<'a> Split<'a> {
    /// Aggregate the log into operations `passes` buckets of operation ids at a time, and write each
    /// operation to its key bucket's file. `ctx` has the payout log and the transactions registered.
    pub async fn new(ctx: &'a SessionContext, params: &Params, passes: u32) -> Result<Split<'a>, ReconcileError> {
        ctx.register_udf(bucket_udf(passes));
        rename(ctx, LOG, ALL_LOG)?;
        rename(ctx, TRANSACTIONS, ALL_TRANSACTIONS)?;
        let dir = TempDir::new()?;
        let mut writers: Vec<Option<ArrowWriter<File>>> = (0..passes).map(|_| None).collect();
        let mut operations = 0u64;
        for pass in 0..passes {
            view(ctx, LOG, &format!("SELECT * FROM {ALL_LOG} WHERE {BUCKET_FN}(operation_id) = {pass}")).await?;
            status_view(ctx).await?;
            let mut stream = matching::stream(ctx, &SPLIT, params).await?;
            while let Some(batch) = matching::next(&SPLIT, &mut stream).await? {
                operations += batch.num_rows() as u64;
                write_by_key(&batch, passes, &dir.0, &mut writers)?;
            }
        }
        for writer in writers.into_iter().flatten() {
            writer.close().map_err(files_failed(&dir.0))?;
        }
        Ok(Split { ctx, dir, operations })
    }

    /// Operations in the log.
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// `query` (classified or unclaimed transactions) over the rows of bucket `pass`.
    pub async fn stream(
        &self,
        pass: u32,
        query: &Query,
        params: &Params,
    ) -> Result<SendableRecordBatchStream, ReconcileError> {
        let ctx = self.ctx;
        let _ = ctx.deregister_table(OPS).map_err(failed(query.file))?;
        let except = format!("EXCLUDE ({KEY_BUCKET}, {AGENT_BUCKET})");
        if query == &CLASSIFIED {
            let file = file_of(&self.dir.0, pass);
            if file.exists() {
                register_parquet(ctx, &file, query).await?;
                let ids = logged_tx_ids(ctx).await?;
                ctx.register_udf(logged_tx_udf(Arc::new(ids)));
                view(ctx, STATUS, &format!("SELECT * {except} FROM {OPS}")).await?;
            } else {
                // No operation's key falls in this bucket: nothing to classify.
                no_operations(ctx).await?;
                ctx.register_udf(logged_tx_udf(Arc::new(HashSet::new())));
            }
            view(
                ctx,
                TRANSACTIONS,
                &format!(
                    "SELECT * FROM {ALL_TRANSACTIONS} WHERE (idempotency_key IS NOT NULL AND \
                     {BUCKET_FN}(idempotency_key) = {pass}) OR {LOGGED_TX_FN}(tx_id)"
                ),
            )
            .await?;
        } else if query == &UNCLAIMED_TRANSACTIONS {
            if self.operations > 0 {
                register_parquet(ctx, &self.dir.0, query).await?;
                let select =
                    format!("SELECT * {except} FROM {OPS} WHERE {KEY_BUCKET} = {pass} OR {AGENT_BUCKET} = {pass}");
                view(ctx, STATUS, &select).await?;
            } else {
                no_operations(ctx).await?;
            }
            view(
                ctx,
                TRANSACTIONS,
                &format!(
                    "SELECT * FROM {ALL_TRANSACTIONS} WHERE CASE WHEN idempotency_key IS NOT NULL \
                     THEN {BUCKET_FN}(idempotency_key) ELSE {BUCKET_FN}(agent_id) END = {pass}"
                ),
            )
            .await?;
        } else {
            // Only these two queries' answers split by bucket; any other would be read wrong here.
            let why = format!("{} does not run in passes", query.file);
            return Err(failed(query.file)(datafusion::error::DataFusionError::Plan(why)));
        }
        matching::stream(ctx, query, params).await
    }

    /// Put the whole tables and the status view back under their names, and remove the bucket files.
    pub async fn finish(self) -> Result<(), ReconcileError> {
        let ctx = self.ctx;
        let _ = ctx.deregister_table(OPS).map_err(failed("the rebuild's passes"))?;
        for (name, whole) in [(LOG, ALL_LOG), (TRANSACTIONS, ALL_TRANSACTIONS)] {
            let _ = ctx.deregister_table(name).map_err(failed("the rebuild's passes"))?;
            rename(ctx, whole, name)?;
        }
        status_view(ctx).await?;
        drop(self.dir);
        Ok(())
    }
}

/// Register the table under `from` as `to` instead.
fn rename(ctx: &SessionContext, from: &str, to: &str) -> Result<(), ReconcileError> {
    let provider =
        ctx.deregister_table(from).map_err(failed("the rebuild's passes"))?.ok_or_else(|| ReconcileError::Query {
            query: "the rebuild's passes",
            source: Box::new(datafusion::error::DataFusionError::Plan(format!("{from} is not registered"))),
        })?;
    ctx.register_table(to, provider).map_err(failed("the rebuild's passes"))?;
    Ok(())
}

/// (Re)define `name` as the view `select`; a view binds its tables and functions when it is made, so each
/// pass makes its views again.
async fn view(ctx: &SessionContext, name: &str, select: &str) -> Result<(), ReconcileError> {
    let _ = ctx.deregister_table(name).map_err(failed("the rebuild's passes"))?;
    ctx.sql(&format!("CREATE VIEW {name} AS {select}")).await.map_err(failed("the rebuild's passes"))?;
    Ok(())
}

/// The status view as `sql/views/` defines it, over whatever is registered as the payout log now.
async fn status_view(ctx: &SessionContext) -> Result<(), ReconcileError> {
    let _ = ctx.deregister_table(STATUS).map_err(failed("the rebuild's passes"))?;
    for (name, sql) in VIEWS {
        if *name == STATUS {
            ctx.sql(sql).await.map_err(failed("sql/views/purpleflea.payouts.status.sql"))?;
        }
    }
    Ok(())
}

async fn register_parquet(ctx: &SessionContext, path: &Path, query: &Query) -> Result<(), ReconcileError> {
    let mut path = path.display().to_string();
    if !path.ends_with(".parquet") && !path.ends_with('/') {
        // A folder: every file in it.
        path.push('/');
    }
    ctx.register_parquet(OPS, path, ParquetReadOptions::default()).await.map_err(failed(query.file))
}

/// The transaction ids this pass's operations' logs name.
async fn logged_tx_ids(ctx: &SessionContext) -> Result<HashSet<String>, ReconcileError> {
    let batches = ctx
        .sql(&format!("SELECT DISTINCT tx_id FROM {OPS} WHERE tx_id IS NOT NULL"))
        .await
        .map_err(failed("the rebuild's passes"))?
        .collect()
        .await
        .map_err(failed("the rebuild's passes"))?;
    let mut ids = HashSet::new();
    for batch in batches {
        let text = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        ids.extend(text.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

/// The status view over no operations (the status view of an empty log): its columns, no rows.
async fn no_operations(ctx: &SessionContext) -> Result<(), ReconcileError> {
    view(ctx, LOG, &format!("SELECT * FROM {ALL_LOG} WHERE false")).await?;
    status_view(ctx).await
}

fn file_of(dir: &Path, bucket: u32) -> PathBuf {
    dir.join(format!("bucket-{bucket}.parquet"))
}

/// Add the key and agent buckets to `batch` (the status view's rows) and append each row to its key
/// bucket's file.
fn write_by_key(
    batch: &RecordBatch,
    passes: u32,
    dir: &Path,
    writers: &mut [Option<ArrowWriter<File>>],
) -> Result<(), ReconcileError> {
    let text = |name: &str| -> Result<ArrayRef, ReconcileError> {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("the status view has no {name}")))?;
        Ok(arrow::compute::cast(column, &DataType::Utf8)?)
    };
    let (id, key, agent) = (text("operation_id")?, text("idempotency_key")?, text("agent_id")?);
    let (id, key, agent) = (id.as_string::<i32>(), key.as_string::<i32>(), agent.as_string::<i32>());
    let key_bucket: UInt32Array = (0..batch.num_rows())
        .map(|i| {
            // As the SQL function reads them: a NULL is the empty string.
            let by = match (key.is_null(i), id.is_null(i)) {
                (false, _) => key.value(i),
                (true, false) => id.value(i),
                (true, true) => "",
            };
            Some(bucket(by, passes))
        })
        .collect();
    let agent_bucket: UInt32Array = agent.iter().map(|a| Some(bucket(a.unwrap_or(""), passes))).collect();
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(KEY_BUCKET, DataType::UInt32, false)));
    fields.push(Arc::new(Field::new(AGENT_BUCKET, DataType::UInt32, false)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(key_bucket.clone()));
    columns.push(Arc::new(agent_bucket));
    let with_buckets = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    for b in 0..passes {
        let mask: BooleanArray = key_bucket.iter().map(|k| Some(k == Some(b))).collect();
        if mask.true_count() == 0 {
            continue;
        }
        let rows = arrow::compute::filter_record_batch(&with_buckets, &mask)?;
        let slot = &mut writers[b as usize];
        if slot.is_none() {
            let file = File::create(file_of(dir, b)).map_err(files_failed(dir))?;
            // Snappy: a third of the plain size on disk for little CPU.
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .set_compression(Compression::SNAPPY)
                .build();
            *slot = Some(ArrowWriter::try_new(file, rows.schema(), Some(props)).map_err(files_failed(dir))?);
        }
        if let Some(writer) = slot {
            writer.write(&rows).map_err(files_failed(dir))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_grow_with_the_history_and_shrink_with_the_limit() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(count(0, 1024 * MIB), 1);
        assert_eq!(count(2_000_000, 1024 * MIB), 1);
        assert_eq!(count(6_000_000, 1024 * MIB), 3);
        assert_eq!(count(20_000_000, 1024 * MIB), 10);
        assert_eq!(count(20_000_000, 2048 * MIB), 5);
        assert_eq!(count(u64::MAX, 64 * MIB), MAX_PASSES);
    }

    #[test]
    fn buckets_are_stable_and_in_range() {
        assert_eq!(bucket("pfsync:default:payout:p-1", 7), bucket("pfsync:default:payout:p-1", 7));
        assert!((0..1000).all(|i| bucket(&format!("k{i}"), 7) < 7));
        assert_eq!(bucket("anything", 1), 0);
        let used: HashSet<u32> = (0..1000).map(|i| bucket(&format!("k{i}"), 7)).collect();
        assert_eq!(used.len(), 7);
    }
}
