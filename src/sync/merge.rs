//! Upsert of current-state rows (wallets, escrows): diff a batch against the table and MERGE only the rows
//! that are new or changed, so unchanged rows are never rewritten and the change data feed shows only real
//! changes. Shared by the seed's paged sync (`engine.rs`) and the live provider's (`live/`).

use arrow::array::{BooleanArray, RecordBatch};
use datafusion::prelude::{SessionContext, col};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;

use super::SyncError;
use crate::tables::TableSpec;

/// How many rows of one upsert were new, changed, or already there as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upserted {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// MERGE the rows of `source` (the spec's schema, keyed by its first column) that are new or differ from
/// `table` in any column but `bookkeeping` ones; every row when `all` (a `--full` refresh). Returns the table
/// after the commit (unchanged when nothing needed writing).
pub async fn upsert_changed(
    table: DeltaTable,
    spec: &'static TableSpec,
    bookkeeping: &[&str],
    all: bool,
    source: RecordBatch,
    properties: CommitProperties,
) -> Result<(DeltaTable, Upserted), SyncError> {
    let write_err = |e: deltalake::DeltaTableError| SyncError::write(spec.name, e);
    let query_err = |e: datafusion::error::DataFusionError| SyncError::write(spec.name, e.into());
    let key = spec.columns[0].name;
    let rows = source.num_rows() as u64;
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(write_err)?;
    let provider = table.table_provider().await.map_err(query_err)?;
    ctx.register_table("target", provider).map_err(query_err)?;
    ctx.register_batch("source", source).map_err(query_err)?;
    let same: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| c.name != key && !bookkeeping.contains(&c.name))
        .map(|c| format!("(s.{0} IS NOT DISTINCT FROM t.{0})", c.name))
        .collect();
    let filter = if all { String::new() } else { format!("WHERE t.{key} IS NULL OR NOT ({})", same.join(" AND ")) };
    let sql = format!(
        "SELECT s.*, t.{key} IS NULL AS pfsync_is_new FROM source s LEFT JOIN target t ON s.{key} = t.{key} {filter}"
    );
    let changed = ctx.sql(&sql).await.map_err(query_err)?.collect().await.map_err(query_err)?;
    let width = spec.columns.len();
    let mut inserted = 0u64;
    let mut out: Vec<RecordBatch> = Vec::new();
    for b in changed.iter().filter(|b| b.num_rows() > 0) {
        let is_new = b.column(width).as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
            SyncError::Arrow(arrow::error::ArrowError::SchemaError("diff flag is not boolean".into()))
        })?;
        inserted += is_new.true_count() as u64;
        let projected = b.project(&(0..width).collect::<Vec<_>>())?;
        // Back to the declared schema (field metadata, exact types) for the writer.
        out.push(RecordBatch::try_new(spec.arrow_schema(), projected.columns().to_vec())?);
    }
    let written: u64 = out.iter().map(|b| b.num_rows() as u64).sum();
    let counts = Upserted { inserted, updated: written - inserted, unchanged: rows - written };
    if written == 0 {
        return Ok((table, counts));
    }
    let merge_ctx = SessionContext::new();
    let source = merge_ctx.read_batches(out).map_err(query_err)?;
    let (table, _metrics) = table
        .merge(source, col(format!("t.{key}")).eq(col(format!("s.{key}"))))
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(properties)
        .when_matched_update(|u| {
            spec.columns.iter().skip(1).fold(u, |u, c| u.update(c.name, col(format!("s.{}", c.name))))
        })
        .and_then(|m| {
            m.when_not_matched_insert(|i| {
                spec.columns.iter().fold(i, |i, c| i.set(c.name, col(format!("s.{}", c.name))))
            })
        })
        .map_err(write_err)?
        .await
        .map_err(write_err)?;
    Ok((table, counts))
}
