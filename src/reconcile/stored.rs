//! Reading and writing the state reconcile keeps: the classification's partitions and files, the small
//! totals tables, and the one commit that moves the classification (its rows and its coverage together).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
use futures::TryStreamExt;

use super::ReconcileError;
use super::coverage::{self, Coverage};
use super::state::{ClassificationRow, Versions};
use crate::tables::row::Row;
use crate::tables::{CLASSIFICATION, CommitInfo, TableSpec};

/// Files of settled rows are kept small, so a late transaction for an old operation rewrites little.
pub const TARGET_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The name of the column a scan adds with each row's file.
pub const FILE_COLUMN: &str = "pfsync_file";

fn read_err(spec: &'static TableSpec) -> impl Fn(deltalake::DeltaTableError) -> ReconcileError {
    move |e| ReconcileError::Read { table: spec.name, source: Box::new(e) }
}

fn write_err(spec: &'static TableSpec) -> impl Fn(deltalake::DeltaTableError) -> ReconcileError {
    move |e| ReconcileError::Write { table: spec.name, source: Box::new(e) }
}

fn query_err(what: &'static str) -> impl Fn(datafusion::error::DataFusionError) -> ReconcileError {
    move |e| ReconcileError::Query { query: what, source: Box::new(e) }
}

/// A file's identity as a scan's file column or a snapshot gives it: its path under the table, decoded.
pub fn file_key(table: &DeltaTable, file: &str) -> String {
    let root = table.log_store().root_url().to_string();
    let relative = file.strip_prefix(root.as_str()).unwrap_or(file).trim_start_matches('/');
    percent_encoding::percent_decode_str(relative).decode_utf8_lossy().into_owned()
}

/// A batch of `spec`'s columns, in its order and types, from a query result with the same columns by name
/// (text may come back as views, timestamps and decimals at other widths); `versions`' columns stamped.
pub fn conform(
    batch: &RecordBatch,
    spec: &TableSpec,
    versions: Option<Versions>,
) -> Result<RecordBatch, ReconcileError> {
    let schema = spec.arrow_schema();
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let stamped = match (versions, field.name().as_str()) {
            (Some(v), "log_version") => Some(v.log),
            (Some(v), "transactions_version") => Some(v.transactions),
            _ => None,
        };
        if let Some(value) = stamped {
            columns.push(Arc::new(Int64Array::from(vec![value; n])));
            continue;
        }
        let column = batch.column_by_name(field.name()).ok_or_else(|| {
            ReconcileError::Arrow(arrow::error::ArrowError::SchemaError(format!("no column {}", field.name())))
        })?;
        columns.push(arrow::compute::cast(column, field.data_type())?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Every row of a query over the state (its own session), decoded.
pub async fn rows<R: Row>(ctx: &SessionContext, sql: &str, what: &'static str) -> Result<Vec<R>, ReconcileError> {
    let batches = ctx.sql(sql).await.map_err(query_err(what))?.collect().await.map_err(query_err(what))?;
    Ok(R::from_batches(&batches)?)
}

/// A session over one table as it is in `table` (its version), registered as `t`, with each row's file as
/// the column [`FILE_COLUMN`] when `with_files`, or over only `files`.
pub async fn session_over(
    table: &DeltaTable,
    spec: &'static TableSpec,
    with_files: bool,
    files: Option<&BTreeSet<String>>,
) -> Result<SessionContext, ReconcileError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(read_err(spec))?;
    let mut builder = table.table_provider();
    if with_files {
        builder = builder.with_file_column(FILE_COLUMN);
    }
    if let Some(files) = files {
        builder = builder.with_file_paths(files.iter().cloned());
    }
    let provider = builder.await.map_err(query_err(spec.name))?;
    ctx.register_table("t", provider).map_err(query_err(spec.name))?;
    Ok(ctx)
}

/// Every row of a small table at the version `table` is at.
pub async fn all_rows<R: Row>(table: &DeltaTable, spec: &'static TableSpec) -> Result<Vec<R>, ReconcileError> {
    let ctx = session_over(table, spec, false, None).await?;
    rows(&ctx, "SELECT * FROM t", spec.name).await
}

/// Replace a small table's rows (the totals): one commit; its version is what the classification pins.
pub async fn overwrite<R: Row>(
    table: DeltaTable,
    spec: &'static TableSpec,
    rows: &[R],
    commit: &CommitInfo,
) -> Result<i64, ReconcileError> {
    let table = table
        .write(vec![R::to_batch(rows)?])
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(commit.properties())
        .await
        .map_err(write_err(spec))?;
    Ok(crate::tables::version_of(&table))
}

/// A writer of classification rows (files of up to [`TARGET_FILE_BYTES`], split by `settled`); its files
/// are committed by [`commit`].
pub fn writer(table: &DeltaTable) -> Result<RecordBatchWriter, ReconcileError> {
    Ok(RecordBatchWriter::for_table(table)
        .map_err(write_err(&CLASSIFICATION))?
        .with_target_file_size(TARGET_FILE_BYTES))
}

pub async fn write(w: &mut RecordBatchWriter, batch: RecordBatch) -> Result<(), ReconcileError> {
    w.write(batch).await.map_err(write_err(&CLASSIFICATION))
}

pub async fn write_rows(w: &mut RecordBatchWriter, rows: &[ClassificationRow]) -> Result<(), ReconcileError> {
    for chunk in rows.chunks(65_536) {
        write(w, ClassificationRow::to_batch(chunk)?).await?;
    }
    Ok(())
}

pub async fn flush(w: &mut RecordBatchWriter) -> Result<Vec<Add>, ReconcileError> {
    w.flush().await.map_err(write_err(&CLASSIFICATION))
}

/// The classification's files the predicate selects: all of them, the unsettled partition's, or `paths`.
pub enum Files<'a> {
    All,
    Unsettled,
    Paths(&'a BTreeSet<String>),
}

/// The classification's files as its current snapshot lists them.
async fn file_views(table: &DeltaTable) -> Result<Vec<deltalake::kernel::LogicalFileView>, ReconcileError> {
    let snapshot = table.snapshot().map_err(read_err(&CLASSIFICATION))?;
    snapshot
        .snapshot()
        .file_views(table.log_store().as_ref(), None)
        .try_collect()
        .await
        .map_err(read_err(&CLASSIFICATION))
}

/// Remove actions for the classification's files that `which` selects.
pub async fn removes(table: &DeltaTable, which: Files<'_>) -> Result<Vec<Remove>, ReconcileError> {
    let views = file_views(table).await?;
    let mut out = Vec::new();
    for v in views {
        let keep = match &which {
            Files::All => true,
            Files::Unsettled => v.partition_values_map().get("settled").cloned().flatten().as_deref() == Some("false"),
            Files::Paths(paths) => paths.contains(&file_key(table, v.path().as_ref())),
        };
        if keep {
            out.push(v.remove_action(true));
        }
    }
    Ok(out)
}

/// How many rows the files `paths` hold, from their statistics.
pub async fn rows_in(table: &DeltaTable, paths: &BTreeSet<String>) -> Result<u64, ReconcileError> {
    if paths.is_empty() {
        return Ok(0);
    }
    let views = file_views(table).await?;
    Ok(views
        .iter()
        .filter(|v| paths.contains(&file_key(table, v.path().as_ref())))
        .map(|v| v.num_records().unwrap_or(0) as u64)
        .sum())
}

/// One commit of the classification: files out, files in, and the coverage, together.
pub async fn commit(
    table: &DeltaTable,
    commit: &CommitInfo,
    removes: Vec<Remove>,
    adds: Vec<Add>,
    covers: &Coverage,
    overwrite: bool,
) -> Result<i64, ReconcileError> {
    let actions: Vec<Action> =
        removes.into_iter().map(Action::Remove).chain(adds.into_iter().map(Action::Add)).collect();
    let properties = commit.properties().with_application_transactions(coverage::transactions(covers));
    let operation = DeltaOperation::Write {
        mode: if overwrite { SaveMode::Overwrite } else { SaveMode::Append },
        partition_by: Some(vec!["settled".to_string()]),
        predicate: None,
    };
    let snapshot = table.snapshot().map_err(read_err(&CLASSIFICATION))?;
    let done = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(write_err(&CLASSIFICATION))?;
    Ok(i64::try_from(done.version()).unwrap_or(i64::MAX))
}
