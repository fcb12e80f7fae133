//! `pfsync payouts`: flags to options, the step, and its exit code.

use super::error::AppError;
use super::step::{Context, StepOutcome};
use crate::cli::PayoutsArgs;
use crate::http::ClientConfig;
use crate::payouts::{PayoutOptions, PayoutReport, run_payouts};
use crate::progress::Progress;
use crate::provider::Provider;
use crate::tables::CommitInfo;

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
        payout_sql: args.payouts_query(),
        action_sql: args.actions_query(),
        check_agents: !args.no_agent_check,
        shard: args.shard,
        extra_tables: args.register.clone(),
        in_flight_timeout: std::time::Duration::from_secs(args.in_flight_timeout),
        clock: crate::clock::process_clock(),
        ..PayoutOptions::default()
    })
}

/// The options as the client will run them: the longest send comes from the client's timeout and retry
/// budget, and the in-flight timeout must leave room for it. Checked before any step touches anything.
pub fn with_client(opts: &PayoutOptions, cfg: &ClientConfig) -> Result<PayoutOptions, AppError> {
    let opts = PayoutOptions { send_budget: cfg.send_budget(), ..opts.clone() };
    opts.check()?;
    Ok(opts)
}

/// Exit status of a payouts run: unknown outcomes (retry), then brake, then refusals.
pub fn payout_outcome(r: &PayoutReport) -> Result<(), AppError> {
    // Operations another run may still be sending are not settled either: rerun to see them through.
    if r.unknown + r.in_flight_elsewhere + r.held_after_unknown > 0 {
        return Err(AppError::OutcomeUnknown {
            unknown: r.unknown + r.in_flight_elsewhere + r.held_after_unknown,
            detail: "a rerun resolves them by lookup".into(),
        });
    }
    if r.held_by_brake > 0 {
        return Err(AppError::BrakeHeld { held: r.held_by_brake });
    }
    // Rows refused the same way before were recorded (and made a run exit 5) then: only new refusals count.
    let refused = r.rejected_rows - r.refused_before.min(r.rejected_rows) + r.rejected_by_api;
    if refused > 0 {
        return Err(AppError::RowsFailed { failed: refused });
    }
    Ok(())
}

pub(super) async fn payouts_step(
    ctx: &Context,
    provider: &dyn Provider,
    opts: &PayoutOptions,
) -> Result<StepOutcome, AppError> {
    engine_step(ctx, provider, opts, "payouts").await
}

/// The exactly-once engine over the sources `opts` selects, as step `step` (`payouts`, `rules`).
pub(super) async fn engine_step(
    ctx: &Context,
    provider: &dyn Provider,
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
    let report = run_payouts(provider, &ctx.settings.warehouse, &commit, opts, &progress).await?;
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
        ("refused_before", report.refused_before),
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
    let mut result = payout_outcome(&report);
    if let Err(AppError::OutcomeUnknown { unknown, .. }) = result {
        let detail = waiting_detail(ctx, provider, opts, &report).await;
        result = Err(AppError::OutcomeUnknown { unknown, detail });
    }
    if crate::stop::requested() && !report.dry_run {
        let waits = match &result {
            Err(AppError::OutcomeUnknown { unknown, detail }) => format!("; {unknown} wait: {detail}"),
            _ => String::new(),
        };
        result = Err(AppError::Stopped {
            detail: format!(
                "the {step} batch in flight finished and its outcomes are logged; {} operation(s) were not \
                 started and nothing new was sent (the next run picks them up){waits}",
                report.not_started
            ),
        });
    }
    Ok(StepOutcome {
        rows: Some(report.source_rows as i64),
        amount: Some(report.usd_moved),
        counts,
        result,
        dry_run: report.dry_run,
    })
}

/// Which operations wait and from when a rerun acts on them, read from the log as the run left it. A log
/// that cannot be read leaves the message general: the exit code says the same.
async fn waiting_detail(ctx: &Context, provider: &dyn Provider, opts: &PayoutOptions, r: &PayoutReport) -> String {
    let now = opts.clock.now();
    let plan = opts.plan_options(provider.capabilities(), now);
    let read = async {
        let Some(log) = crate::tables::open_existing(&ctx.settings.warehouse, &crate::tables::PAYOUT_LOG).await? else {
            return Ok::<_, AppError>((Vec::new(), 0));
        };
        Ok(crate::payouts::waiting::open_operations(&log, &plan, 20).await?)
    };
    match read.await {
        Ok((waiting, total)) => crate::payouts::waiting::summary(&waiting, total, r.held_after_unknown, now),
        Err(e) => {
            tracing::warn!(error = %e, "could not read which operations wait");
            "a rerun resolves them by lookup".into()
        }
    }
}
