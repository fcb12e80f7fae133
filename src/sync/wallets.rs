//! `purpleflea.agents.wallets`: page every wallet from the API and upsert it by `agent_id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use datafusion::prelude::{SessionContext, col};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;

use super::{SyncError, SyncOptions, SyncReport};
use crate::api::{Client, ListQuery, Wallet};
use crate::progress::Progress;
use crate::tables::{CommitInfo, WALLETS, Warehouse, open_or_create};

/// The wallets as one Arrow batch in the table's schema, `last_synced_at` set to the sync's start.
pub fn wallets_batch(wallets: &[&Wallet], synced_at: DateTime<Utc>) -> Result<RecordBatch, SyncError> {
    let synced = synced_at.timestamp_micros();
    let strings = |f: &dyn Fn(&Wallet) -> Option<&str>| -> ArrayRef {
        Arc::new(wallets.iter().map(|w| f(w)).collect::<StringArray>())
    };
    let doubles = |f: &dyn Fn(&Wallet) -> f64| -> ArrayRef {
        Arc::new(wallets.iter().map(|w| Some(f(w))).collect::<Float64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|w| Some(w.agent_id.as_str())),
        strings(&|w| w.wallet_address.as_deref()),
        doubles(&|w| w.balance_usd.to_f64_lossy_for_display_column()),
        Arc::new(wallets.iter().map(|w| Some(w.active_escrow_count)).collect::<Int32Array>()),
        doubles(&|w| w.total_earned_usd.to_f64_lossy_for_display_column()),
        strings(&|w| w.referral_code.as_deref()),
        Arc::new(
            wallets
                .iter()
                .map(|w| Some(w.registered_at.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(synced); wallets.len()]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(WALLETS.arrow_schema(), columns)?)
}

/// Read every wallet page. A wallet that changes while we page shows up again later; the newest copy
/// (by `updated_at`) wins. A row that does not fit the contract is counted and logged, the rest go on.
async fn fetch_all(
    client: &Client,
    opts: &SyncOptions,
    progress: &Progress,
    report: &mut SyncReport,
) -> Result<HashMap<String, Wallet>, SyncError> {
    let mut latest: HashMap<String, Wallet> = HashMap::new();
    let query = ListQuery { limit: Some(opts.page_size), ..ListQuery::default() };
    let mut pages = std::pin::pin!(client.pages::<Wallet>(query));
    while let Some(page) = pages.try_next().await? {
        report.pages += 1;
        for row in page.rows {
            report.rows_read += 1;
            match row {
                Ok(w) => match latest.get(&w.agent_id) {
                    Some(old) if old.updated_at > w.updated_at => {}
                    _ => {
                        latest.insert(w.agent_id.clone(), w);
                    }
                },
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(table = WALLETS.name, error = %e, "row skipped");
                }
            }
        }
        progress.rows(report.rows_read, report.pages);
    }
    Ok(latest)
}

fn has_data(table: &DeltaTable) -> Result<bool, SyncError> {
    Ok(table.get_file_uris().map_err(|e| SyncError::write(WALLETS.name, e))?.next().is_some())
}

/// Sync `purpleflea.agents.wallets` in full: afterwards it holds one row per agent the API lists, each
/// with the values the API last returned.
pub async fn sync_wallets(
    client: &Client,
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &SyncOptions,
    progress: &Progress,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mut report = SyncReport::new(WALLETS.name);
    let table = open_or_create(wh, &WALLETS, commit).await?;
    let synced_at = Utc::now();
    let latest = fetch_all(client, opts, progress, &mut report).await?;
    progress.phase("writing");
    let mut rows: Vec<&Wallet> = latest.values().collect();
    rows.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let batches: Vec<RecordBatch> =
        rows.chunks(opts.write_batch_rows.max(1)).map(|c| wallets_batch(c, synced_at)).collect::<Result<_, _>>()?;

    let table = if rows.is_empty() {
        table
    } else if !has_data(&table)? {
        // First load: a plain append, no join against an empty target.
        let t = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| SyncError::write(WALLETS.name, e))?;
        report.inserted = rows.len() as u64;
        t
    } else {
        let ctx = SessionContext::new();
        let source = ctx.read_batches(batches).map_err(|e| SyncError::write(WALLETS.name, e.into()))?;
        let (t, metrics) = table
            .merge(source, col("t.agent_id").eq(col("s.agent_id")))
            .with_source_alias("s")
            .with_target_alias("t")
            .with_commit_properties(commit.properties())
            .when_matched_update(|u| {
                WALLETS.columns.iter().skip(1).fold(u, |u, c| u.update(c.name, col(format!("s.{}", c.name))))
            })
            .and_then(|m| {
                m.when_not_matched_insert(|i| {
                    WALLETS.columns.iter().fold(i, |i, c| i.set(c.name, col(format!("s.{}", c.name))))
                })
            })
            .map_err(|e| SyncError::write(WALLETS.name, e))?
            .await
            .map_err(|e| SyncError::write(WALLETS.name, e))?;
        report.inserted = metrics.num_target_rows_inserted as u64;
        report.updated = metrics.num_target_rows_updated as u64;
        t
    };
    report.version = table.version();
    report.elapsed = started.elapsed();
    progress.finish();
    Ok(report)
}
