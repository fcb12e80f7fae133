//! The rows appended to an append-only table (the payout log, the transactions) since a version, from the
//! commits after it: every file a commit added as new data (`dataChange`), read from its own Parquet file.
//! A file a later compaction rewrote is still there (both tables keep removed files 365 days), so `pfsync
//! maintain` between two runs costs nothing. A range that is not plain appends (a commit removed data, the
//! schema changed, a commit is gone from the log, a file carries a deletion vector) cannot be read this way:
//! the run rebuilds instead.

use datafusion::common::ScalarValue;
use datafusion::prelude::{ParquetReadOptions, SessionContext, lit};
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add};
use futures::StreamExt;

use super::ReconcileError;
use crate::tables::TableSpec;
use crate::tables::row::{Row, days_since_epoch};

/// The files appended after one version up to another, with how many rows their statistics count.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    pub files: Vec<Add>,
    pub rows: u64,
}

/// Why the commits after a version are not plain appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAppends(pub String);

fn stats_rows(add: &Add) -> Option<u64> {
    let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
    stats.get("numRecords")?.as_u64()
}

/// The data files the commits `after + 1 ..= upto` appended.
pub async fn appended(
    table: &DeltaTable,
    spec: &TableSpec,
    after: i64,
    upto: i64,
) -> Result<Result<Appended, NotAppends>, ReconcileError> {
    let store = table.log_store();
    let mut out = Appended::default();
    for version in (after + 1).max(0)..=upto {
        let Ok(version) = u64::try_from(version) else { continue };
        let Some(bytes) = store
            .read_commit_entry(version)
            .await
            .map_err(|e| ReconcileError::Read { table: spec.name, source: Box::new(e) })?
        else {
            return Ok(Err(NotAppends(format!("{} version {version} is no longer in its log", spec.name))));
        };
        let actions = deltalake::logstore::get_actions(version, &bytes)
            .map_err(|e| ReconcileError::Read { table: spec.name, source: Box::new(e) })?;
        for action in actions {
            match action {
                Action::Add(add) if add.data_change => {
                    if add.deletion_vector.is_some() {
                        return Ok(Err(NotAppends(format!("{} version {version} has a deletion vector", spec.name))));
                    }
                    let Some(rows) = stats_rows(&add) else {
                        return Ok(Err(NotAppends(format!(
                            "{} version {version} added a file without row counts",
                            spec.name
                        ))));
                    };
                    out.rows += rows;
                    out.files.push(add);
                }
                Action::Remove(r) if r.data_change => {
                    return Ok(Err(NotAppends(format!("{} version {version} removed data", spec.name))));
                }
                // The table's creation (version 0) declares it; a later declaration may have changed it.
                Action::Metadata(_) if version > 0 => {
                    return Ok(Err(NotAppends(format!("{} version {version} changed its metadata", spec.name))));
                }
                _ => {}
            }
        }
    }
    Ok(Ok(out))
}

/// The rows of `files`, decoded as the table's row type. Each file is read from its own Parquet file with its
/// partition value put back as a column (Delta keeps partition values out of the files).
pub async fn read<R: Row>(
    ctx: &SessionContext,
    table: &DeltaTable,
    spec: &'static TableSpec,
    files: &[Add],
) -> Result<Vec<R>, ReconcileError> {
    let failed =
        |e: datafusion::error::DataFusionError| ReconcileError::Query { query: spec.name, source: Box::new(e) };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| ReconcileError::Read { table: spec.name, source: Box::new(e) })?;
    let root = table.log_store().root_url().clone();
    let mut out = Vec::new();
    for add in files {
        let url = root.join(&add.path).map_err(|e| ReconcileError::Undecodable {
            query: spec.name,
            row: add.path.clone(),
            source: crate::tables::row::CellError::Value {
                column: "path",
                value: e.to_string(),
                expected: "a file path under the table",
            },
        })?;
        let mut df = ctx.read_parquet(url.as_str(), ParquetReadOptions::default()).await.map_err(failed)?;
        for column in spec.partition_columns {
            let value = add.partition_values.get(*column).cloned().flatten();
            df = df.with_column(column, lit(partition_value(spec, column, value.as_deref())?)).map_err(failed)?;
        }
        let mut stream = df.execute_stream().await.map_err(failed)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(failed)?;
            out.extend(R::from_batch(&batch)?);
        }
    }
    Ok(out)
}

/// A partition value as Delta writes it in the log (text), typed as its column.
fn partition_value(
    spec: &'static TableSpec,
    column: &'static str,
    value: Option<&str>,
) -> Result<ScalarValue, ReconcileError> {
    use crate::tables::ColumnType;
    let bad = |v: &str| ReconcileError::Undecodable {
        query: spec.name,
        row: format!("partition {column}={v}"),
        source: crate::tables::row::CellError::Value {
            column,
            value: v.to_string(),
            expected: "a partition value of its type",
        },
    };
    let kind = spec.column(column).map(|c| c.kind);
    Ok(match (kind, value) {
        (Some(ColumnType::Date), Some(v)) => {
            let day = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad(v))?;
            ScalarValue::Date32(Some(days_since_epoch(day)))
        }
        (Some(ColumnType::Date), None) => ScalarValue::Date32(None),
        (Some(ColumnType::Boolean), Some(v)) => ScalarValue::Boolean(Some(v.parse().map_err(|_| bad(v))?)),
        (Some(ColumnType::String), v) => ScalarValue::Utf8(v.map(str::to_string)),
        (_, v) => return Err(bad(v.unwrap_or("NULL"))),
    })
}
