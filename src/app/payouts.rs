//! `pfsync payouts`: flags to options, the step, and its exit code.

use super::backend::Backend;
use super::{AppError, Context, StepOutcome};
use crate::api::ClientConfig;
use crate::cli::PayoutsArgs;
use crate::payouts::{AfterBatch, PayoutOptions, PayoutReport, run_payouts, run_payouts_with};
use crate::progress::Progress;
use crate::provider::LiveProvider;
use crate::provider::SeedProvider;
use crate::tables::CommitInfo;
use crate::tables::Warehouse;

/// Flags of `pfsync payouts` as engine options; everything is checked here or by clap's value parsers
/// (`--shard`, `--register`, `--max-total-usd`), before any table is touched.
pub fn payout_options(args: &PayoutsArgs) -> Result<PayoutOptions, AppError> {
    crate::payouts::check_namespace(&args.namespace)?;
    Ok(PayoutOptions {
        namespace: args.namespace.clone(),
        batch_size: args.batch_size as usize,
        concurrency: args.concurrency as usize,
        max_total: args.max_total_usd,
        max_count: args.max_count,
        dry_run: args.dry_run,
        payout_sql: args.payouts_sql.clone(),
        action_sql: args.actions_sql.clone(),
        check_agents: !args.no_agent_check,
        shard: args.shard,
        extra_tables: args.register.clone(),
        in_flight_timeout: std::time::Duration::from_secs(args.in_flight_timeout),
        ..PayoutOptions::default()
    })
}

/// The options as the client will run them: the longest send comes from the client's timeout and retry
/// budget, and the in-flight timeout must leave room for it. Checked before any step touches anything.
pub fn with_client(opts: &PayoutOptions, cfg: &ClientConfig) -> Result<PayoutOptions, AppError> {
    let opts = PayoutOptions { send_budget: cfg.timeout.saturating_add(cfg.retry.max_elapsed), ..opts.clone() };
    opts.check()?;
    Ok(opts)
}

/// Exit status of a payouts run: unknown outcomes (retry), then brake, then refusals.
pub fn payout_outcome(r: &PayoutReport) -> Result<(), AppError> {
    // Operations another run may still be sending are not settled either: rerun to see them through.
    if r.unknown + r.in_flight_elsewhere + r.held_after_unknown > 0 {
        return Err(AppError::OutcomeUnknown { unknown: r.unknown + r.in_flight_elsewhere + r.held_after_unknown });
    }
    if r.held_by_brake > 0 {
        return Err(AppError::BrakeHeld { held: r.held_by_brake });
    }
    let refused = r.rejected_rows + r.rejected_by_api;
    if refused > 0 {
        return Err(AppError::RowsFailed { failed: refused });
    }
    Ok(())
}

/// The live casino answers an agent's last 50 ledger entries only, and a payouts run writes one entry per
/// payout on the payer: its ledger is copied after every batch (at most 20 debits of a payer), so that the
/// window still reaches back to the previous copy and the copy has no gap of pfsync's own making.
pub(crate) struct KeepLedgers<'a> {
    pub(crate) provider: &'a LiveProvider,
    pub(crate) wh: &'a Warehouse,
    pub(crate) commit: CommitInfo,
}

impl AfterBatch for KeepLedgers<'_> {
    fn after_batch(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            // A failed copy loses nothing: the next sync reads the window again, and reports a gap if the
            // window has moved past it.
            match crate::sync::live::sync_live_ledgers(self.provider, self.wh, &self.commit).await {
                Ok(r) if r.gaps > 0 => tracing::warn!(gaps = r.gaps, "ledger copy during payouts found gaps"),
                Ok(r) => tracing::debug!(inserted = r.inserted, "ledger copied after a batch"),
                Err(e) => tracing::warn!(error = %e, "ledger copy during payouts failed; the next sync reads it again"),
            }
        })
    }
}

pub(super) async fn payouts_step(
    ctx: &Context,
    backend: &Backend,
    opts: &PayoutOptions,
) -> Result<StepOutcome, AppError> {
    engine_step(ctx, backend, opts, "payouts").await
}

/// The exactly-once engine over the sources `opts` selects, as step `step` (`payouts`, `rules`).
pub(super) async fn engine_step(
    ctx: &Context,
    backend: &Backend,
    opts: &PayoutOptions,
    step: &'static str,
) -> Result<StepOutcome, AppError> {
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step };
    let progress = Progress::new(ctx.progress, step);
    // The change feeds of the config file are payout sources: read by the payouts step, not the rules one.
    let with_feeds;
    let opts = if opts.rules.is_none() && !ctx.settings.feeds.is_empty() {
        with_feeds = PayoutOptions { feeds: ctx.settings.feeds.clone(), ..opts.clone() };
        &with_feeds
    } else {
        opts
    };
    let wh = &ctx.settings.warehouse;
    let report = match backend {
        Backend::Seed(client) => {
            let provider = SeedProvider::new(client.clone(), client.config().keys_honoured);
            run_payouts(&provider, wh, &commit, opts, &progress).await?
        }
        // Payees at the live services are any agents, not only those the wallets table lists (one row per
        // held key there): the provider refuses an unknown payee itself (`recipient_not_found`).
        Backend::Live(provider, _) => {
            let opts = PayoutOptions { check_agents: false, ..opts.clone() };
            let keep = KeepLedgers {
                provider,
                wh,
                commit: CommitInfo { run_id: ctx.run_id.clone(), step: "sync.transactions" },
            };
            run_payouts_with(provider.as_ref(), wh, &commit, &opts, &progress, &keep).await?
        }
    };
    if report.dry_run {
        for p in &report.plan {
            println!(
                "would {} {:<14} {:<32} {:>16} {}",
                if p.resolve_first { "resolve" } else { "send   " },
                p.kind.as_str(),
                p.operation_id,
                p.amount.map(|a| a.to_string()).unwrap_or_default(),
                p.agent_id.as_deref().unwrap_or("")
            );
        }
    }
    println!("{report}");
    let counts = [
        ("completed", report.completed),
        ("resolved_by_lookup", report.resolved_by_lookup),
        ("rejected_by_api", report.rejected_by_api),
        ("refused_by_validation", report.rejected_rows),
        ("unknown", report.unknown),
        ("needs_person", report.needs_person),
        ("in_flight_elsewhere", report.in_flight_elsewhere),
        ("replayed", report.replayed),
        ("waiting", report.waiting),
        ("resolved_from_ledger", report.resolved_from_ledger),
        ("held_after_unknown", report.held_after_unknown),
        ("past_auto_release", report.past_auto_release),
        ("held_by_brake", report.held_by_brake),
        ("not_started", report.not_started),
        ("already_final", report.already_final),
        ("log_commits", report.log_commits),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    Ok(StepOutcome {
        rows: Some(report.source_rows as i64),
        amount: Some(report.usd_moved),
        counts,
        result: payout_outcome(&report),
    })
}
