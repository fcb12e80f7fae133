//! The commands, run from parsed flags, and the mapping of their failures to exit codes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{ApiError, Client};
use crate::cli::{
    Cli, Command, DemoArgs, FaultArgs, MaintainArgs, PayoutsArgs, ReconcileArgs, ReconcileFlags, RunArgs, SandboxArgs,
    SqlArgs, StatusArgs, Step, SyncArgs, SyncTarget,
};
use crate::config::{ConfigError, Settings};
use crate::maintain::{MaintainError, MaintainOptions, maintain_all};
use crate::money::Usd;
use crate::ops::RunRecord;
use crate::payouts::{PausePoint, PayoutError, PayoutOptions, PayoutReport, run_payouts};
use crate::progress::Progress;
use crate::reconcile::{Class, FINDING_CLASSES, ReconcileError, ReconcileOptions, ReconcileReport};
use crate::sandbox::{FaultConfig, Sandbox, SandboxConfig, SeedConfig};
use crate::secret::{API_KEY_ENV, ApiKey};
use crate::sync::{SyncError, SyncOptions, SyncReport, sync_escrows, sync_transactions, sync_wallets};
use crate::tables::{CommitInfo, TableError, Warehouse, sql_context};

/// Documented exit codes (see `pfsync --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Internal = 1,
    Usage = 2,
    Api = 3,
    Table = 4,
    RowsFailed = 5,
    OutcomeUnknown = 6,
    BrakeHeld = 7,
    FindingsOpen = 8,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("{failed} row(s) failed; the other rows were written (see the warnings above for ids and reasons)")]
    RowsFailed { failed: u64 },
    #[error(transparent)]
    Maintain(#[from] MaintainError),
    #[error(transparent)]
    Payout(#[from] PayoutError),
    #[error(
        "{unknown} operation(s) have no known outcome yet; rerun to resolve them by lookup (nothing is paid twice)"
    )]
    OutcomeUnknown { unknown: u64 },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("{open} reconciliation finding(s) open; see the report or the purpleflea.payouts.open_findings view")]
    FindingsOpen { open: u64 },
    #[error("the safety brake held back {held} operation(s); raise --max-total-usd / --max-count or check the source")]
    BrakeHeld { held: u64 },
    #[cfg(feature = "unity")]
    #[error(transparent)]
    Unity(#[from] crate::tables::unity::UnityError),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Config(_) | AppError::Usage(_) => Exit::Usage,
            AppError::Api(ApiError::InsecureUrl { .. } | ApiError::BadUrl { .. } | ApiError::BadSetting(_)) => {
                Exit::Usage
            }
            AppError::Api(_) | AppError::Sync(SyncError::Api(_)) => Exit::Api,
            AppError::Table(_) | AppError::Sync(_) => Exit::Table,
            AppError::RowsFailed { .. } => Exit::RowsFailed,
            AppError::Maintain(MaintainError::RetentionTooShort(_)) => Exit::Usage,
            AppError::Maintain(_) => Exit::Table,
            AppError::Payout(PayoutError::Config(_) | PayoutError::Source(_)) => Exit::Usage,
            AppError::Payout(PayoutError::Api(_)) => Exit::Api,
            AppError::Payout(_) => Exit::Table,
            AppError::OutcomeUnknown { .. } => Exit::OutcomeUnknown,
            AppError::BrakeHeld { .. } => Exit::BrakeHeld,
            AppError::Reconcile(ReconcileError::Report { .. }) => Exit::Usage,
            AppError::Reconcile(_) => Exit::Table,
            AppError::FindingsOpen { .. } => Exit::FindingsOpen,
            // The catalog unreachable: retry; a name it does not know, or a bad setting: fix first.
            #[cfg(feature = "unity")]
            AppError::Unity(crate::tables::unity::UnityError::Request { .. }) => Exit::Table,
            #[cfg(feature = "unity")]
            AppError::Unity(_) => Exit::Usage,
            AppError::Internal(_) => Exit::Internal,
        }
    }
}

pub struct Context {
    pub settings: Settings,
    pub run_id: String,
    pub progress: bool,
}

pub async fn run(cli: Cli) -> Result<(), AppError> {
    #[allow(unused_mut)] // mutated only by the `unity` feature
    let mut settings = Settings::resolve(&cli.global.overrides())?;
    // `init` creates tables at the warehouse's own paths, for an admin to register; every other command that
    // touches tables finds them through the catalog once they are registered.
    #[cfg(feature = "unity")]
    if let Some(section) = settings.unity.clone()
        && !matches!(cli.command, Command::Sandbox(_) | Command::Init | Command::Ddl)
    {
        let names: Vec<_> =
            crate::tables::ALL.iter().map(|s| s.table_name()).filter(|n| !settings.warehouse.is_mapped(n)).collect();
        for (name, url) in crate::tables::unity::resolve(&mut settings.warehouse, &section, names).await? {
            tracing::info!(table = %name, location = %url, "location from Unity Catalog");
        }
    }
    let run_id = match &cli.global.run_id {
        Some(id) if id.trim().is_empty() || id.len() > 200 => {
            return Err(AppError::Usage("--run-id must be 1..=200 characters".into()));
        }
        Some(id) => id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let ctx = Context { settings, run_id, progress: !cli.global.quiet };
    let span = tracing::info_span!("run", run_id = %ctx.run_id);
    let _guard = span.enter();
    match cli.command {
        Command::Run(args) => run_steps(&ctx, &args).await,
        Command::Sync(args) => {
            let client = Client::new(ctx.settings.client_config()?)?;
            recorded(&ctx, "sync", sync_step(&ctx, &client, args.target, &sync_options(&args))).await
        }
        Command::Sandbox(args) => sandbox(&args).await,
        Command::Demo(args) => demo(&ctx, &args).await,
        Command::Sql(args) => sql(&ctx, &args).await,
        Command::Maintain(args) => maintain(&ctx, &args).await,
        Command::Payouts(args) => {
            let opts = payout_options(&args)?;
            let client = Client::new(ctx.settings.client_config()?)?;
            recorded(&ctx, "payouts", payouts_step(&ctx, &client, &opts)).await
        }
        Command::Status(args) => status(&ctx, &args).await,
        Command::Reconcile(args) => {
            crate::payouts::check_namespace(&args.namespace)?;
            let classes = fail_on(&args.flags.fail_on)?;
            recorded(&ctx, "reconcile", reconcile_step(&ctx, &args, &classes)).await
        }
        Command::Init => {
            let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "init" };
            for spec in crate::tables::ALL {
                let t = crate::tables::open_or_create(&ctx.settings.warehouse, spec, &commit).await?;
                println!(
                    "{:<36} version {:<4} {}",
                    spec.name,
                    t.version().unwrap_or(0),
                    ctx.settings.warehouse.location(&spec.table_name())
                );
            }
            Ok(())
        }
        Command::Tables => tables(&ctx).await,
        Command::Ddl => {
            for spec in crate::tables::ALL {
                println!("{}", crate::tables::ddl::render(spec));
            }
            Ok(())
        }
    }
}

fn rows_failed(reports: &[SyncReport]) -> Result<(), AppError> {
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    if failed > 0 { Err(AppError::RowsFailed { failed }) } else { Ok(()) }
}

async fn run_sync(
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

fn step(ctx: &Context, step: &'static str, label: &str) -> (CommitInfo, Progress) {
    (CommitInfo { run_id: ctx.run_id.clone(), step }, Progress::new(ctx.progress, label))
}

fn sync_options(args: &SyncArgs) -> SyncOptions {
    SyncOptions {
        page_size: args.page_size,
        batch_rows: args.batch_rows as usize,
        full: args.full,
        overlap: Duration::from_secs(args.overlap_secs),
        fail_after_pages: None,
    }
}

/// What one step did (for `purpleflea.ops.runs`) and how it ended.
pub struct StepOutcome {
    pub rows: Option<i64>,
    pub amount: Option<Usd>,
    pub counts: BTreeMap<String, u64>,
    /// A step can finish its work and still end non-zero (rows refused, outcomes unknown, findings open).
    pub result: Result<(), AppError>,
}

async fn sync_step(
    ctx: &Context,
    client: &Client,
    target: SyncTarget,
    opts: &SyncOptions,
) -> Result<StepOutcome, AppError> {
    let reports = run_sync(ctx, client, target, opts).await?;
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

/// Run a step and record it in `purpleflea.ops.runs` (not for usage errors: those touch nothing).
async fn recorded(
    ctx: &Context,
    step: &'static str,
    work: impl std::future::Future<Output = Result<StepOutcome, AppError>>,
) -> Result<(), AppError> {
    let started_at = chrono::Utc::now();
    let (record, result) = match work.await {
        Ok(o) => {
            let exit = o.result.as_ref().err().map(|e| e.exit() as i32).unwrap_or(0);
            (
                RunRecord {
                    step,
                    started_at,
                    finished_at: chrono::Utc::now(),
                    rows: o.rows,
                    amount: o.amount,
                    counts: o.counts,
                    exit_code: exit,
                },
                o.result,
            )
        }
        Err(e) => {
            let exit = e.exit() as i32;
            let r = RunRecord {
                step,
                started_at,
                finished_at: chrono::Utc::now(),
                rows: None,
                amount: None,
                counts: BTreeMap::new(),
                exit_code: exit,
            };
            (r, Err(e))
        }
    };
    if record.exit_code != Exit::Usage as i32 {
        let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "ops.runs" };
        if let Err(e) = crate::ops::record(&ctx.settings.warehouse, &commit, &record).await {
            tracing::warn!(error = %e, "could not record the step in purpleflea.ops.runs");
        }
    }
    result
}

fn fault_config(seed: u64, f: &FaultArgs) -> Result<FaultConfig, AppError> {
    let base = if f.chaos { FaultConfig::chaos(seed) } else { FaultConfig { seed, ..FaultConfig::default() } };
    let cfg = FaultConfig {
        latency_prob: f.fault_latency.unwrap_or(base.latency_prob),
        rate_limit_prob: f.fault_rate_limit.unwrap_or(base.rate_limit_prob),
        max_rps: f.fault_max_rps.or(base.max_rps),
        error_before_prob: f.fault_error_before.unwrap_or(base.error_before_prob),
        error_after_prob: f.fault_error_after.unwrap_or(base.error_after_prob),
        drop_after_prob: f.fault_drop_after.unwrap_or(base.drop_after_prob),
        slow_body_prob: f.fault_slow_body.unwrap_or(base.slow_body_prob),
        malformed_prob: f.fault_malformed.unwrap_or(base.malformed_prob),
        ..base
    };
    cfg.validate().map_err(|e| AppError::Usage(format!("--fault-*: {e}")))?;
    Ok(cfg)
}

async fn sandbox(args: &SandboxArgs) -> Result<(), AppError> {
    let faucet_amount =
        Usd::parse_positive(&args.faucet_amount).map_err(|e| AppError::Usage(format!("--faucet-amount: {e}")))?;
    let api_key = match std::env::var(API_KEY_ENV) {
        Ok(k) => ApiKey::new(&k, "in PURPLEFLEA_API_KEY").map_err(|e| AppError::Usage(e.to_string()))?,
        Err(_) => crate::sandbox::default_key(),
    };
    let cfg = SandboxConfig {
        host: args.host,
        port: args.port,
        world: SeedConfig { agents: args.agents, seed: args.seed, faucet_amount, ..SeedConfig::default() },
        api_key,
        idempotency_retention: Duration::from_secs(args.idempotency_retention_secs),
        faults: fault_config(args.seed, &args.faults)?,
        admin: args.admin,
    };
    let sb = Sandbox::start(cfg).await.map_err(|e| AppError::Usage(format!("cannot start the sandbox: {e}")))?;
    println!(
        "pfsync sandbox ready at {} ({} agents, seed {}); Ctrl-C stops it",
        sb.base_url(),
        args.agents + 1,
        args.seed
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    let stats = sb.stats();
    sb.shutdown().await;
    println!("pfsync sandbox stopped after {} requests ({} faults injected)", stats.requests, stats.faults);
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The seed's analyst query, verbatim: DataFusion accepts the Databricks spelling.
pub const SEED_QUERY: &str = include_str!("../sql/analyst/high_balances_ready_for_payout.sql");

async fn demo(ctx: &Context, args: &DemoArgs) -> Result<(), AppError> {
    let wh = &ctx.settings.warehouse;
    // Checked before the sandbox starts: the demo only ever clears a folder it made itself.
    if let Ok(dir) = wh.root().to_file_path() {
        crate::demo::prepare_warehouse(&dir).map_err(|e| AppError::Usage(e.to_string()))?;
    }
    let mut cfg = SandboxConfig::for_tests(args.agents);
    cfg.world.seed = args.seed;
    let sb = Sandbox::start(cfg).await.map_err(|e| AppError::Internal(format!("cannot start the sandbox: {e}")))?;
    let base = sb.base_url();
    println!("pfsync demo: in-process sandbox at {base} ({} agents, seed {})", args.agents + 1, args.seed);
    println!("warehouse: {}\n", display_location(wh));
    let client = Client::new(ctx.settings.client_config_with_key(base.clone(), base, crate::sandbox::default_key()))?;

    println!("1. sync");
    let reports = run_sync(ctx, &client, SyncTarget::All, &SyncOptions::default()).await?;
    for r in &reports {
        println!("   {r}");
    }

    println!("2. payouts: {} pending payouts (4 of them bad) and {} escrow bounties", args.payouts + 4, args.bounties);
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "demo.seed" };
    crate::demo::seed_sources(wh, args.agents, args.payouts, args.bounties, args.seed, &commit)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let opts = PayoutOptions { namespace: "demo".into(), ..PayoutOptions::default() };
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "payouts" };
    let report = run_payouts(&client, wh, &commit, &opts, &Progress::new(ctx.progress, "payouts")).await?;
    println!("   {report}");

    println!("3. sync again (the payouts moved balances)");
    let after = run_sync(ctx, &client, SyncTarget::All, &SyncOptions::default()).await?;
    for r in &after {
        println!("   {r}");
    }

    println!("4. reconcile");
    let report_path = wh.root().to_file_path().ok().map(|p| p.join("reconciliation.html"));
    let rargs = ReconcileArgs {
        namespace: "demo".into(),
        flags: ReconcileFlags { stale_after_secs: 3600, report: report_path.clone(), fail_on: Vec::new() },
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
    if report.unknown > 0 {
        return Err(AppError::OutcomeUnknown { unknown: report.unknown });
    }
    Ok(())
}

fn display_location(wh: &Warehouse) -> String {
    match wh.root().to_file_path() {
        Ok(p) => p.display().to_string(),
        Err(_) => wh.root().to_string(),
    }
}

async fn query_count(ctx: &datafusion::prelude::SessionContext, table: &str) -> Result<i64, AppError> {
    let batches = ctx
        .sql(&format!("SELECT count(*) AS n FROM {table}"))
        .await
        .map_err(|e| TableError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| TableError::Query(e.to_string()))?;
    let n = batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(n)
}

async fn print_query(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
    max_rows: usize,
) -> Result<usize, AppError> {
    let df = ctx.sql(query).await.map_err(|e| TableError::Query(e.to_string()))?;
    let batches = df
        .limit(0, Some(max_rows))
        .map_err(|e| TableError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| TableError::Query(e.to_string()))?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let table = arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| AppError::Internal(e.to_string()))?;
    println!("{table}");
    Ok(rows)
}

async fn sql(ctx: &Context, args: &SqlArgs) -> Result<(), AppError> {
    let sql = sql_context(&ctx.settings.warehouse).await?;
    let rows = print_query(&sql, &args.query, args.max_rows).await?;
    println!("({rows} rows)");
    Ok(())
}

async fn maintain(ctx: &Context, args: &MaintainArgs) -> Result<(), AppError> {
    let opts = MaintainOptions { retention_hours: args.retention_hours, i_know: args.i_know, dry_run: args.dry_run };
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "maintain" };
    let reports = maintain_all(&ctx.settings.warehouse, &opts, &commit).await?;
    if reports.is_empty() {
        println!("no pfsync tables under {}", ctx.settings.warehouse.root());
    }
    for r in reports {
        println!("{r}");
    }
    Ok(())
}

/// Flags of `pfsync payouts` as engine options; everything is checked here, before any table is touched.
pub fn payout_options(args: &PayoutsArgs) -> Result<PayoutOptions, AppError> {
    crate::payouts::check_namespace(&args.namespace)?;
    let max_total = match &args.max_total_usd {
        Some(t) => Some(crate::money::Usd::parse(t).map_err(|e| AppError::Usage(format!("--max-total-usd: {e}")))?),
        None => None,
    };
    let shard = match &args.shard {
        None => None,
        Some(s) => {
            let parsed = s
                .split_once('/')
                .and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)));
            match parsed {
                Some((i, n)) if n > 0 && i < n => Some((i, n)),
                _ => return Err(AppError::Usage(format!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"))),
            }
        }
    };
    let mut extra_tables = Vec::new();
    for r in &args.register {
        let (name, loc) =
            r.split_once('=').ok_or_else(|| AppError::Usage(format!("--register {r:?}: expected NAME=PATH|URI")))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(AppError::Usage(format!("--register {r:?}: the name must be letters, digits and _")));
        }
        let url = crate::tables::location_url(loc).map_err(|e| AppError::Usage(format!("--register {r:?}: {e}")))?;
        extra_tables.push((name.to_string(), url));
    }
    let pause_at = std::env::var("PFSYNC_PAUSE_AT").ok().and_then(|p| PausePoint::parse(&p));
    Ok(PayoutOptions {
        namespace: args.namespace.clone(),
        batch_size: args.batch_size as usize,
        concurrency: args.concurrency as usize,
        max_total,
        max_count: args.max_count,
        dry_run: args.dry_run,
        payout_sql: args.payouts_sql.clone(),
        action_sql: args.actions_sql.clone(),
        check_agents: !args.no_agent_check,
        shard,
        extra_tables,
        pause_at,
    })
}

/// Exit status of a payouts run: unknown outcomes (retry), then brake, then refusals.
pub fn payout_outcome(r: &PayoutReport) -> Result<(), AppError> {
    if r.unknown > 0 {
        return Err(AppError::OutcomeUnknown { unknown: r.unknown });
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

async fn payouts_step(ctx: &Context, client: &Client, opts: &PayoutOptions) -> Result<StepOutcome, AppError> {
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "payouts" };
    let progress = Progress::new(ctx.progress, "payouts");
    let report = run_payouts(client, &ctx.settings.warehouse, &commit, opts, &progress).await?;
    if report.dry_run {
        for p in &report.plan {
            println!(
                "would {} {:<14} {:<32} {:>16} {}",
                if p.resolve_first { "resolve" } else { "send   " },
                p.kind,
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
        ("waiting", report.waiting),
        ("held_by_brake", report.held_by_brake),
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

/// Operations per kind and status, from the status view.
const STATUS_SUMMARY: &str = "SELECT kind, status, count(*) AS operations, sum(amount_usd) AS amount_usd \
     FROM purpleflea.payouts.status GROUP BY kind, status ORDER BY kind, status";

async fn status(ctx: &Context, args: &StatusArgs) -> Result<(), AppError> {
    let sql = sql_context(&ctx.settings.warehouse).await?;
    if sql.table_exist("purpleflea.payouts.status").unwrap_or(false) {
        print_query(&sql, STATUS_SUMMARY, 1000).await?;
        let open = format!(
            "SELECT operation_id, kind, status, attempts, amount_usd, error_code, last_recorded_at \
             FROM purpleflea.payouts.status WHERE status IN ('unknown', 'in_flight') ORDER BY last_recorded_at LIMIT {}",
            args.show
        );
        println!("not final:");
        print_query(&sql, &open, args.show).await?;
    } else {
        println!("no payout log under {} yet", ctx.settings.warehouse.root());
    }
    Ok(())
}

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

async fn reconcile_step(ctx: &Context, args: &ReconcileArgs, classes: &[Class]) -> Result<StepOutcome, AppError> {
    if !args.no_sync {
        let client = Client::new(ctx.settings.client_config()?)?;
        for r in run_sync(ctx, &client, SyncTarget::All, &SyncOptions::default()).await? {
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
    })
}

async fn reconcile_and_report(ctx: &Context, args: &ReconcileArgs) -> Result<ReconcileReport, AppError> {
    let opts = ReconcileOptions {
        namespace: args.namespace.clone(),
        stale_after: Duration::from_secs(args.flags.stale_after_secs),
    };
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "reconcile" };
    let report = crate::reconcile::reconcile(&ctx.settings.warehouse, &commit, &opts).await?;
    print!("{}", crate::reconcile::report::text(&report));
    if let Some(path) = &args.flags.report {
        std::fs::write(path, crate::reconcile::report::html(&report))
            .map_err(|source| ReconcileError::Report { path: path.display().to_string(), source })?;
        println!("report: {}", path.display());
    }
    Ok(report)
}

/// The most useful exit for a scheduler among steps that finished: retry-worthy first.
fn worst(results: Vec<Result<(), AppError>>) -> Result<(), AppError> {
    let rank = |e: &AppError| match e.exit() {
        Exit::OutcomeUnknown => 0,
        Exit::FindingsOpen => 1,
        Exit::BrakeHeld => 2,
        Exit::RowsFailed => 3,
        _ => 4,
    };
    let mut errors: Vec<AppError> = results.into_iter().filter_map(Result::err).collect();
    errors.sort_by_key(rank);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `pfsync run`: the steps in order under one run id. A step that fails hard stops the run (later steps
/// build on it); one that finishes with refusals, unknown outcomes or findings lets the next step run.
async fn run_steps(ctx: &Context, args: &RunArgs) -> Result<(), AppError> {
    // Every flag is checked before any step touches anything.
    let popts = payout_options(&args.payouts)?;
    let classes = fail_on(&args.reconcile.fail_on)?;
    let client = Client::new(ctx.settings.client_config()?)?;
    let rargs = ReconcileArgs {
        namespace: args.payouts.namespace.clone(),
        flags: args.reconcile.clone(),
        // The ledger moved during payouts: reconcile always syncs it again first.
        no_sync: false,
    };
    let mut results = Vec::new();
    for step in &args.steps {
        let r = match step {
            Step::Sync => {
                recorded(ctx, "sync", sync_step(ctx, &client, SyncTarget::All, &SyncOptions::default())).await
            }
            Step::Payouts => recorded(ctx, "payouts", payouts_step(ctx, &client, &popts)).await,
            Step::Reconcile => recorded(ctx, "reconcile", reconcile_step(ctx, &rargs, &classes)).await,
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

async fn tables(ctx: &Context) -> Result<(), AppError> {
    use futures::TryStreamExt;
    let wh = &ctx.settings.warehouse;
    let sql = sql_context(wh).await?;
    println!("{:<36} {:>8} {:>10}  {:<38} location", "table", "version", "rows", "last commit's run id");
    for spec in crate::tables::ALL {
        let location = wh.location(&spec.table_name());
        match crate::tables::open_existing(wh, spec).await? {
            None => println!("{:<36} {:>8} {:>10}  {:<38} {location}", spec.name, "-", "-", "(not created)"),
            Some(t) => {
                let rows = query_count(&sql, spec.name).await?;
                let last: Vec<deltalake::kernel::CommitInfo> =
                    t.history(Some(1)).try_collect().await.map_err(|e| TableError::Query(e.to_string()))?;
                let run = last
                    .first()
                    .and_then(|c| c.info.get("pfsync.run_id"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_string();
                println!("{:<36} {:>8} {:>10}  {:<38} {location}", spec.name, t.version().unwrap_or(0), rows, run);
            }
        }
    }
    Ok(())
}
