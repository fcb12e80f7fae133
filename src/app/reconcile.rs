//! `pfsync reconcile`: the step, its report, and which findings fail the run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::AppError;
use super::step::{Context, StepOutcome};
use super::sync::run_sync;
use crate::cli::{ReconcileArgs, SyncTarget};
use crate::reconcile::{Class, FINDING_CLASSES, ReconcileError, ReconcileOptions, ReconcileReport};
use crate::sync::SyncOptions;
use crate::tables::CommitInfo;

/// The classes `--fail-on` names, checked before anything runs.
pub fn fail_on(names: &[String]) -> Result<Vec<Class>, AppError> {
    if names.is_empty() {
        return Ok(FINDING_CLASSES.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Class::parse(n.trim()).filter(|c| c.is_finding()).ok_or_else(|| {
                let all: Vec<&str> = FINDING_CLASSES.iter().map(|c| c.as_str()).collect();
                AppError::Usage(format!("--fail-on: {n:?} is not a finding class ({})", all.join(", ")))
            })
        })
        .collect()
}

pub(super) async fn reconcile_step(
    ctx: &Context,
    args: &ReconcileArgs,
    classes: &[Class],
) -> Result<StepOutcome, AppError> {
    if !args.no_sync {
        let provider = super::step::connect(ctx).await?;
        for r in run_sync(ctx, provider.as_ref(), SyncTarget::All, &SyncOptions::default()).await? {
            println!("{r}");
        }
    }
    let report = reconcile_and_report(ctx, args).await?;
    let mut counts: BTreeMap<String, u64> = report.counts.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    counts.insert("open_findings".into(), report.open().count() as u64);
    counts.insert("resolved".into(), report.resolved().count() as u64);
    let open = report.failing(classes);
    Ok(StepOutcome {
        rows: Some(report.operations as i64),
        amount: Some(report.matched_usd),
        counts,
        result: if open > 0 { Err(AppError::FindingsOpen { open }) } else { Ok(()) },
        dry_run: false,
    })
}

pub(super) async fn reconcile_and_report(ctx: &Context, args: &ReconcileArgs) -> Result<ReconcileReport, AppError> {
    let opts = ReconcileOptions {
        namespace: args.namespace.clone(),
        stale_after: Duration::from_secs(args.flags.stale_after_secs),
        full: args.flags.full,
        memory_limit: args.flags.memory_limit_mib as usize * 1024 * 1024,
        passes: args.flags.rebuild_passes,
    };
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "reconcile" };
    let report = crate::reconcile::reconcile(&ctx.settings.warehouse, &commit, &opts).await.map_err(|e| {
        if e.out_of_memory() {
            // Not a storage failure a retry gets past: the same limit fails the same way.
            AppError::Usage(format!(
                "{e}\nthe rebuild needs more than --memory-limit-mib {} allows: raise it (the machine's memory less \
                 what else runs there; BENCHMARKS.md has the peak memory measured per history size)",
                args.flags.memory_limit_mib
            ))
        } else {
            e.into()
        }
    })?;
    print!("{}", crate::reconcile::report::text(&report));
    if let Some(path) = &args.flags.report {
        std::fs::write(path, crate::reconcile::report::html(&report))
            .map_err(|source| ReconcileError::Report { path: path.display().to_string(), source })?;
        println!("report: {}", path.display());
    }
    Ok(report)
}
