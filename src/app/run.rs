//! `pfsync run`: the Workflow entry point, the selected steps in order under one run id.

use super::error::AppError;
use super::payouts::{payout_options, payouts_step, with_client};
use super::reconcile::{fail_on, reconcile_step};
use super::step::{Context, recorded, worst};
use super::sync::sync_step;
use crate::cli::{ReconcileArgs, RunArgs, Step, SyncTarget};
use crate::exit::Exit;
use crate::sync::SyncOptions;

/// `pfsync run`: the steps in order under one run id. A step that fails hard stops the run (later steps
/// build on it); one that finishes with refusals, unknown outcomes or findings lets the next step run.
pub(super) async fn run_steps(ctx: &Context, args: &RunArgs) -> Result<(), AppError> {
    // Every flag is checked before any step touches anything.
    let popts = payout_options(&args.payouts)?;
    let classes = fail_on(&args.reconcile.fail_on)?;
    let popts = with_client(&popts, &ctx.settings.client_config()?)?;
    let mlflow = if args.steps.contains(&Step::Rules) {
        super::rules::mlflow_from_env(ctx.settings.proxy.as_ref().map(|p| p.url()))?
    } else {
        None
    };
    let provider = super::step::connect(ctx).await?;
    let backend = provider.as_ref();
    let rargs = ReconcileArgs {
        namespace: args.payouts.namespace.clone(),
        flags: args.reconcile.clone(),
        // The ledger moved during payouts: reconcile always syncs it again first.
        no_sync: false,
    };
    if !args.follow {
        return pass(ctx, args, backend, &popts, &rargs, &classes, &mlflow).await;
    }
    let mut passes = 0u64;
    loop {
        passes += 1;
        match pass(ctx, args, backend, &popts, &rargs, &classes, &mlflow).await {
            Err(e) if e.exit() == Exit::Usage => return Err(e),
            Err(e) if crate::stop::requested() => {
                tracing::info!(pass = passes, exit = e.exit().code(), error = %e, "pass ended by the stop");
            }
            Err(e) => {
                tracing::warn!(pass = passes, exit = e.exit().code(), error = %e, "pass ended; the next one follows")
            }
            Ok(()) => tracing::info!(pass = passes, "pass finished"),
        }
        if crate::stop::sleep_unless_stopped(std::time::Duration::from_secs(args.interval)).await {
            tracing::info!(passes, "stopped");
            return Ok(());
        }
    }
}

/// One pass of the steps.
#[allow(clippy::too_many_arguments)]
async fn pass(
    ctx: &Context,
    args: &RunArgs,
    backend: &dyn crate::provider::Provider,
    popts: &crate::payouts::PayoutOptions,
    rargs: &ReconcileArgs,
    classes: &[crate::reconcile::Class],
    mlflow: &Option<crate::mlflow::MlflowClient>,
) -> Result<(), AppError> {
    let mut results = Vec::new();
    for (i, step) in args.steps.iter().enumerate() {
        if crate::stop::requested() {
            let left: Vec<String> = args.steps[i..].iter().map(|s| format!("{s:?}").to_lowercase()).collect();
            results.push(Err(AppError::Stopped {
                detail: format!("the steps before finished; not started: {}", left.join(", ")),
            }));
            break;
        }
        let r = match step {
            Step::Sync => {
                recorded(ctx, "sync", sync_step(ctx, backend, SyncTarget::All, &SyncOptions::default())).await
            }
            Step::Rules => {
                // The rules step reads its own table only: the payouts step reads the pending sources.
                let ropts = crate::payouts::PayoutOptions {
                    payout_sql: None,
                    action_sql: None,
                    extra_tables: Vec::new(),
                    ..popts.clone()
                };
                let limits = (&args.rules).into();
                recorded(ctx, "rules", super::rules::rules_step(ctx, backend, &ropts, mlflow.clone(), limits)).await
            }
            Step::Payouts => recorded(ctx, "payouts", payouts_step(ctx, backend, popts)).await,
            Step::Reconcile => recorded(ctx, "reconcile", reconcile_step(ctx, rargs, classes)).await,
        };
        match r {
            Err(e)
                if !matches!(
                    e.exit(),
                    Exit::RowsFailed | Exit::OutcomeUnknown | Exit::BrakeHeld | Exit::FindingsOpen
                ) =>
            {
                return Err(e);
            }
            r => results.push(r),
        }
    }
    worst(results)
}
