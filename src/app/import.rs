//! `pfsync import`: rows from a CSV file appended to a source table (pending payouts, escrow actions) in one
//! commit. Importing the same file again adds nothing: a row whose id is already there with the same values
//! is skipped; one whose id is there with other values stops the import before anything is written, since
//! pfsync would refuse both rows as a conflicting duplicate.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::prelude::{col, lit};
use deltalake::protocol::SaveMode;

use super::error::AppError;
use super::step::Context;
use crate::cli::{ImportArgs, ImportTarget};
use crate::import::rows;
use crate::tables::{CommitInfo, ESCROW_ACTIONS, PENDING_PAYOUTS, TableError, TableSpec, open_or_create, sql_context};

pub(super) async fn import(ctx: &Context, args: &ImportArgs) -> Result<(), AppError> {
    let spec: &'static TableSpec = match args.into {
        ImportTarget::Payouts => &PENDING_PAYOUTS,
        ImportTarget::Actions => &ESCROW_ACTIONS,
    };
    let file = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).map_err(|e| AppError::Usage(format!("cannot read {file}: {e}")))?;
    let name = args.file.file_name().map_or(file.clone(), |n| n.to_string_lossy().into_owned());
    let new =
        rows(spec, &bytes, &format!("pfsync import {name}")).map_err(|e| AppError::Usage(format!("{file}: {e}")))?;
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "import" };
    let table = open_or_create(&ctx.settings.warehouse, spec, &commit).await?;

    let key_column = spec.columns[0].name;
    let existing = existing_rows(ctx, spec, new.keys.iter().map(|(k, _)| k.clone()).collect()).await?;
    let fresh = texts(&new.batch)?;
    let (mut keep, mut already, mut conflicts) = (Vec::new(), 0, Vec::new());
    for (i, (key, line)) in new.keys.iter().enumerate() {
        match existing.get(key) {
            None => keep.push(i as u32),
            Some(there) if *there == fresh[i] => already += 1,
            Some(_) => conflicts.push(format!("{key} (line {line})")),
        }
    }
    if !conflicts.is_empty() {
        return Err(AppError::Usage(format!(
            "{file}: {} {key_column}(s) already in {} with other values: {}; nothing was imported (a changed row is a \
             new id, or a fix in the table's own upstream job)",
            conflicts.len(),
            spec.name,
            conflicts.join(", ")
        )));
    }
    if !keep.is_empty() {
        let indices = arrow::array::UInt32Array::from(keep.clone());
        let batch = arrow::compute::take_record_batch(&new.batch, &indices)
            .map_err(|e| AppError::Internal(format!("selecting the rows to import: {e}")))?;
        table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| TableError::Delta {
                table: spec.name.to_string(),
                location: ctx.settings.warehouse.location(&spec.table_name()).to_string(),
                source: Box::new(e),
            })?;
    }
    println!(
        "imported {} row(s) from {file} into {} ({already} already there){}",
        keep.len(),
        spec.name,
        if spec.name == PENDING_PAYOUTS.name { "; `pfsync payouts` pays them" } else { "; `pfsync payouts` runs them" }
    );
    Ok(())
}

/// Each row as text per column, for comparing a row in the file with the row of the same id in the table.
fn texts(batch: &RecordBatch) -> Result<Vec<Vec<Option<String>>>, AppError> {
    let columns: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::cast(c, &DataType::Utf8))
        .collect::<Result<_, _>>()
        .map_err(|e| AppError::Internal(format!("comparing rows: {e}")))?;
    Ok((0..batch.num_rows())
        .map(|i| columns.iter().map(|c| c.is_valid(i).then(|| c.as_string::<i32>().value(i).to_string())).collect())
        .collect())
}

/// The table's rows with these ids, by id, in the spec's column order.
async fn existing_rows(
    ctx: &Context,
    spec: &TableSpec,
    keys: Vec<String>,
) -> Result<HashMap<String, Vec<Option<String>>>, AppError> {
    let query = |e: datafusion::error::DataFusionError| AppError::from(TableError::Query(e.to_string()));
    let sql = sql_context(&ctx.settings.warehouse).await?;
    let names: Vec<&str> = spec.columns.iter().map(|c| c.name).collect();
    let key = spec.columns[0].name;
    let batches = sql
        .table(spec.name)
        .await
        .map_err(query)?
        .filter(col(key).in_list(keys.into_iter().map(lit).collect(), false))
        .map_err(query)?
        .select_columns(&names)
        .map_err(query)?
        .collect()
        .await
        .map_err(query)?;
    let mut out = HashMap::new();
    for b in &batches {
        for row in texts(b)? {
            if let Some(Some(k)) = row.first() {
                out.insert(k.clone(), row);
            }
        }
    }
    Ok(out)
}
