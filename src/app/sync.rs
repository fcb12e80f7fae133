//! `pfsync sync`: the three entity syncs as one step, and their outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use super::backend::Backend;
use super::{AppError, Context, StepOutcome, step};
use crate::api::Client;
use crate::cli::{SyncArgs, SyncTarget};
use crate::sync::{SyncOptions, SyncReport, sync_escrows, sync_transactions, sync_wallets};

pub(super) fn rows_failed(reports: &[SyncReport]) -> Result<(), AppError> {
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    if failed > 0 { Err(AppError::RowsFailed { failed }) } else { Ok(()) }
}

pub(super) async fn run_sync(
    ctx: &Context,
    backend: &Backend,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<Vec<SyncReport>, AppError> {
    match backend {
        Backend::Seed(client) => run_seed_sync(ctx, client, target, opts).await,
        Backend::Live(..) => Err(AppError::Usage(format!(
            "sync is not implemented for the live provider yet ({} escrow ids configured)",
            backend.live_settings().map_or(0, |l| l.escrow_ids.len())
        ))),
    }
}

pub(super) async fn run_seed_sync(
    ctx: &Context,
    client: &Client,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<Vec<SyncReport>, AppError> {
    let wanted = |t: SyncTarget| target == t || target == SyncTarget::All;
    let mut reports = Vec::new();
    let wh = &ctx.settings.warehouse;
    if wanted(SyncTarget::Wallets) {
        let (commit, progress) = step(ctx, "sync.wallets", "wallets");
        reports.push(sync_wallets(client, wh, &commit, opts, &progress).await?);
    }
    if wanted(SyncTarget::Escrows) {
        let (commit, progress) = step(ctx, "sync.escrows", "escrows");
        reports.push(sync_escrows(client, wh, &commit, opts, &progress).await?);
    }
    if wanted(SyncTarget::Transactions) {
        let (commit, progress) = step(ctx, "sync.transactions", "transactions");
        reports.push(sync_transactions(client, wh, &commit, opts, &progress).await?);
    }
    for r in &reports {
        tracing::info!(
            table = r.table,
            rows = r.rows_read,
            inserted = r.inserted,
            updated = r.updated,
            unchanged = r.unchanged,
            failed = r.failed,
            version = r.version,
            "synced"
        );
    }
    Ok(reports)
}

pub(super) fn sync_options(args: &SyncArgs) -> SyncOptions {
    SyncOptions {
        page_size: args.page_size,
        batch_rows: args.batch_rows as usize,
        full: args.full,
        overlap: Duration::from_secs(args.overlap_secs),
        max_pages: args.max_pages,
        max_rows: args.max_rows,
        max_duration: Duration::from_secs(args.max_sync_secs),
        ..SyncOptions::default()
    }
}

pub(super) async fn sync_step(
    ctx: &Context,
    backend: &Backend,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<StepOutcome, AppError> {
    let reports = run_sync(ctx, backend, target, opts).await?;
    let mut counts = BTreeMap::new();
    for r in &reports {
        println!("{r}");
        for (k, v) in
            [("inserted", r.inserted), ("updated", r.updated), ("unchanged", r.unchanged), ("failed", r.failed)]
        {
            *counts.entry(k.to_string()).or_default() += v;
        }
    }
    let rows = reports.iter().map(|r| r.rows_read as i64).sum();
    Ok(StepOutcome { rows: Some(rows), amount: None, counts, result: rows_failed(&reports) })
}
