//! `pfsync sync`: the three entity syncs as one step, and their outcome. What is read follows from what the
//! provider can do: its list endpoints, or the records of the agents whose keys pfsync holds.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::AppError;
use super::step::{Context, StepOutcome, step};
use crate::cli::{SyncArgs, SyncTarget};
use crate::provider::records::{Escrow, Transaction, Wallet};
use crate::provider::{HeldAgents, Listings, Provider};
use crate::sync::{SyncOptions, SyncReport, held, sync_table};

pub(super) fn rows_failed(reports: &[SyncReport]) -> Result<(), AppError> {
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    if failed > 0 { Err(AppError::RowsFailed { failed }) } else { Ok(()) }
}

pub(super) async fn run_sync(
    ctx: &Context,
    provider: &dyn Provider,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<Vec<SyncReport>, AppError> {
    if let Some(listings) = provider.listings() {
        return run_listed_sync(ctx, listings, target, opts).await;
    }
    match provider.held_agents() {
        Some(held) => run_held_sync(ctx, held, target).await,
        None => {
            Err(AppError::Usage("this provider lists nothing and holds no agents' records: nothing to sync".into()))
        }
    }
}

/// A provider that lists nothing: wallets one per held key, escrows by id (the payout log's and the
/// provider's configured ones), and each held key's ledger window (the `transactions` target),
/// deduplicated by entry id with gaps recorded. `SyncOptions` (pages, overlap, `--full`) are about
/// listings and do not apply.
async fn run_held_sync(
    ctx: &Context,
    provider: &dyn HeldAgents,
    target: SyncTarget,
) -> Result<Vec<SyncReport>, AppError> {
    let wanted = |t: SyncTarget| target == t || target == SyncTarget::All;
    let mut reports = Vec::new();
    let wh = &ctx.settings.warehouse;
    if wanted(SyncTarget::Wallets) {
        let (commit, _) = step(ctx, "sync.wallets", "wallets");
        reports.push(held::sync_held_wallets(provider, wh, &commit).await?);
    }
    if wanted(SyncTarget::Escrows) && !crate::stop::requested() {
        let (commit, _) = step(ctx, "sync.escrows", "escrows");
        reports.extend(held::sync_held_escrows(provider, wh, &commit).await?);
    }
    if wanted(SyncTarget::Transactions) && !crate::stop::requested() {
        let (commit, _) = step(ctx, "sync.ledger", "ledger");
        let r = held::sync_held_ledgers(provider, wh, &commit).await?;
        if r.gaps > 0 {
            tracing::warn!(
                gaps = r.gaps,
                "ledger gaps: an agent wrote more entries between two syncs than the provider lists (50); \
                 recorded in purpleflea.ledger.gaps, reported by reconcile as ledger_gap. Sync more often"
            );
        }
        reports.push(r);
    }
    log_reports(&reports);
    Ok(reports)
}

fn log_reports(reports: &[SyncReport]) {
    for r in reports {
        tracing::info!(
            table = r.table,
            rows = r.rows_read,
            inserted = r.inserted,
            updated = r.updated,
            unchanged = r.unchanged,
            failed = r.failed,
            gaps = r.gaps,
            version = r.version,
            "synced"
        );
    }
}

pub(super) async fn run_listed_sync(
    ctx: &Context,
    client: &dyn Listings,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<Vec<SyncReport>, AppError> {
    let wanted = |t: SyncTarget| target == t || target == SyncTarget::All;
    let mut reports = Vec::new();
    let wh = &ctx.settings.warehouse;
    if wanted(SyncTarget::Wallets) {
        let (commit, progress) = step(ctx, "sync.wallets", "wallets");
        reports.push(sync_table::<Wallet>(client, wh, &commit, opts, &progress).await?);
    }
    if wanted(SyncTarget::Escrows) && !crate::stop::requested() {
        let (commit, progress) = step(ctx, "sync.escrows", "escrows");
        reports.push(sync_table::<Escrow>(client, wh, &commit, opts, &progress).await?);
    }
    if wanted(SyncTarget::Transactions) && !crate::stop::requested() {
        let (commit, progress) = step(ctx, "sync.transactions", "transactions");
        reports.push(sync_table::<Transaction>(client, wh, &commit, opts, &progress).await?);
    }
    log_reports(&reports);
    Ok(reports)
}

// A build with the test hooks has one field more (`fail_after_pages`), which the update fills.
#[cfg_attr(not(feature = "test-hooks"), expect(clippy::needless_update, reason = "fields differ by feature"))]
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
    provider: &dyn Provider,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<StepOutcome, AppError> {
    let reports = run_sync(ctx, provider, target, opts).await?;
    let mut counts = BTreeMap::new();
    for r in &reports {
        println!("{r}");
        for (k, v) in [
            ("inserted", r.inserted),
            ("updated", r.updated),
            ("unchanged", r.unchanged),
            ("failed", r.failed),
            ("ledger_gaps", r.gaps),
        ] {
            *counts.entry(k.to_string()).or_default() += v;
        }
    }
    let rows = reports.iter().map(|r| r.rows_read as i64).sum();
    // A stop lets the table being synced finish and be written; the next table is left to the next sync.
    let result = if crate::stop::requested() {
        Err(AppError::Stopped {
            detail: format!(
                "{} table(s) synced and written; no other table was started (the next sync reads them)",
                reports.len()
            ),
        })
    } else {
        rows_failed(&reports)
    };
    Ok(StepOutcome { rows: Some(rows), amount: None, counts, result, dry_run: false })
}
