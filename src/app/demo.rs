//! `pfsync demo`: the whole job against an in-process sandbox and a local warehouse.

use super::error::AppError;
use super::query::{STATUS_SUMMARY, print_query, query_count};
use super::reconcile::reconcile_and_report;
use super::step::{Context, display_location};
use super::sync::{rows_failed, run_sync};
use crate::cli::{DemoArgs, ReconcileArgs, ReconcileFlags, SyncTarget};
use crate::payouts::{PayoutError, PayoutOptions, run_payouts};
use crate::progress::Progress;
use crate::reconcile::FINDING_CLASSES;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::sync::SyncOptions;
use crate::tables::{CommitInfo, sql_context};

/// The seed's analyst query, verbatim: DataFusion accepts the Databricks spelling.
pub const SEED_QUERY: &str = include_str!("../../sql/analyst/high_balances_ready_for_payout.sql");

pub(super) async fn demo(ctx: &Context, args: &DemoArgs) -> Result<(), AppError> {
    let wh = &ctx.settings.warehouse;
    // Checked before the sandbox starts: the demo only ever clears a folder it made itself, and only a local
    // one (it could not tell a bucket's real data from its own as surely).
    let dir = wh.root().to_file_path().map_err(|_| {
        AppError::Usage(format!("the demo writes a local folder; --warehouse {} is not one", wh.root()))
    })?;
    crate::demo::prepare_warehouse(&dir, &ctx.run_id).map_err(|e| AppError::Usage(e.to_string()))?;
    let mut cfg = SandboxConfig::for_tests(args.agents);
    cfg.world.seed = args.seed;
    let sb = Sandbox::start(cfg).await.map_err(|e| AppError::Internal(format!("cannot start the sandbox: {e}")))?;
    let base = sb.base_url();
    println!("pfsync demo: in-process sandbox at {base} ({} agents, seed {})", args.agents + 1, args.seed);
    println!("warehouse: {}\n", display_location(wh));
    // The default provider (the seed's contract, which the in-process sandbox serves), whatever the
    // settings choose: the demo never talks to a real provider.
    let common = crate::provider::Common {
        client: ctx.settings.client_config_with_key(base.clone(), crate::sandbox::default_key()),
        faucet_url: base,
    };
    let provider = crate::provider::connect(&Default::default(), &common).await?;
    let provider = provider.as_ref();

    println!("1. sync");
    let reports = run_sync(ctx, provider, SyncTarget::All, &SyncOptions::default()).await?;
    for r in &reports {
        println!("   {r}");
    }

    println!("2. payouts: {} pending payouts (4 of them bad) and {} escrow bounties", args.payouts + 4, args.bounties);
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "demo.seed" };
    crate::demo::seed_sources(wh, args.agents, args.payouts, args.bounties, args.seed, &commit)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    // The MLflow side of the metric rules, in memory: no MLflow needed (the tests use a real server).
    let stub = crate::sandbox::mlflow_stub::MlflowStub::start()
        .await
        .map_err(|e| AppError::Internal(format!("cannot start the MLflow stub: {e}")))?;
    let accuracy_run = stub.log_run("1", "val_accuracy", &[0.81, 0.90, 0.96, 0.97]);
    let latency_run = stub.log_run("1", "latency_ms", &[80.0, 72.0, 66.0]);
    crate::demo::seed_rules(wh, &accuracy_run, &latency_run, &commit)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    // A change feed: an events table (CDF on) that a pipeline appends to, next to the warehouse.
    let feed = Some(
        crate::demo::seed_feed(&dir.join("pipeline").join("trade_events"), args.agents, &commit)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?,
    );
    if let Some(f) = &feed {
        println!("   and a change feed: 6 trade events in 2 commits of {} ([[feeds]] {})", f.location, f.name);
    }
    let opts =
        PayoutOptions { namespace: "demo".into(), feeds: feed.into_iter().collect(), ..PayoutOptions::default() };
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "payouts" };
    let report = run_payouts(provider, wh, &commit, &opts, &Progress::new(ctx.progress, "payouts")).await?;
    println!("   {report}");

    println!(
        "3. metric rules (purpleflea.escrow.rules, the seed's EscrowReleaseCallback) against an in-process \
         MLflow-like server at {}",
        stub.url
    );
    println!("   run {accuracy_run}: val_accuracy 0.81, 0.90, 0.96, 0.97 (rule: >= 0.95, release)");
    println!("   run {latency_run}: latency_ms 80, 72, 66 (rule: < 50 by a deadline already past, else dispute)");
    let cfg = crate::mlflow::MlflowConfig::from_vars(|k| (k == "MLFLOW_TRACKING_URI").then(|| stub.url.clone()))
        .map_err(PayoutError::from)?;
    let ml = crate::mlflow::MlflowClient::new(cfg).map_err(PayoutError::from)?;
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "rules" };
    let store = crate::payouts::rules::SightingStore { wh: wh.clone(), commit: commit.clone() };
    let limits = crate::payouts::rules::RuleLimits::default();
    let rules = crate::payouts::rules::Rules::new(Some(ml.clone()), chrono::Utc::now(), limits, Some(store));
    let ropts = PayoutOptions { namespace: "demo".into(), rules: Some(rules.clone()), ..PayoutOptions::default() };
    let rreport = run_payouts(provider, wh, &commit, &ropts, &Progress::new(ctx.progress, "rules")).await?;
    println!("   {rreport}");
    let (tagged, _) = super::rules::tag_runs(wh, &ml, &rules.fired()).await;
    println!("   {tagged} MLflow runs tagged; run {accuracy_run}: {:?}", stub.tags(&accuracy_run));

    println!("4. sync again (the payouts moved balances)");
    let after = run_sync(ctx, provider, SyncTarget::All, &SyncOptions::default()).await?;
    for r in &after {
        println!("   {r}");
    }

    println!("5. reconcile");
    let report_path = wh.root().to_file_path().ok().map(|p| p.join("reconciliation.html"));
    let rargs = ReconcileArgs {
        namespace: "demo".into(),
        flags: ReconcileFlags {
            stale_after_secs: 3600,
            report: report_path.clone(),
            fail_on: Vec::new(),
            full: false,
            memory_limit_mib: crate::reconcile::limits::DEFAULT_MEMORY_LIMIT_MIB,
            rebuild_passes: None,
        },
        no_sync: true,
    };
    let reconciled = reconcile_and_report(ctx, &rargs).await.and_then(|r| match r.failing(FINDING_CLASSES) {
        0 => Ok(()),
        open => Err(AppError::FindingsOpen { open }),
    });

    let sql = sql_context(wh).await?;
    println!("\ntables:");
    for spec in crate::tables::ALL {
        if sql.table_exist(spec.name).unwrap_or(false) {
            let count = query_count(&sql, spec.name).await?;
            println!("  {:<32} {:>8} rows  at {}", spec.name, count, wh.location(&spec.table_name()));
        }
    }
    println!("\nthe guide's high-balance query (sql/analyst/high_balances_ready_for_payout.sql), first 5 rows:");
    print_query(&sql, SEED_QUERY, 5).await?;
    println!("\npayout status (the purpleflea.payouts.status view):");
    print_query(&sql, STATUS_SUMMARY, 20).await?;
    println!("rejected rows (purpleflea.payouts.rejects):");
    print_query(&sql, "SELECT operation_id, code, message FROM purpleflea.payouts.rejects ORDER BY operation_id", 10)
        .await?;
    println!(
        "\ntry your own:\n  pfsync --warehouse {} sql \"SELECT agent_id, balance_usd FROM purpleflea.agents.wallets ORDER BY balance_usd DESC LIMIT 5\"",
        display_location(wh)
    );
    if let Some(p) = &report_path {
        println!("\nreconciliation report: {}", p.display());
    }
    sb.shutdown().await;
    reconciled?;
    rows_failed(&reports)?;
    rows_failed(&after)?;
    // The bad rows are there on purpose; anything still unknown is not.
    if report.unknown + rreport.unknown > 0 {
        return Err(AppError::OutcomeUnknown {
            unknown: report.unknown + rreport.unknown,
            detail: "rerun the demo's payouts to resolve them by lookup".into(),
        });
    }
    Ok(())
}
