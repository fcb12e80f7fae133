//! The commands, run from parsed flags, and the mapping of their failures to exit codes.

use std::time::Duration;

use crate::api::{ApiError, Client};
use crate::cli::{Cli, Command, DemoArgs, FaultArgs, MaintainArgs, SandboxArgs, SqlArgs, SyncArgs, SyncTarget};
use crate::config::{ConfigError, Settings};
use crate::maintain::{MaintainError, MaintainOptions, maintain_all};
use crate::money::Usd;
use crate::progress::Progress;
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
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Config(_) | AppError::Usage(_) => Exit::Usage,
            AppError::Api(ApiError::InsecureUrl { .. } | ApiError::BadUrl { .. }) => Exit::Usage,
            AppError::Api(_) | AppError::Sync(SyncError::Api(_)) => Exit::Api,
            AppError::Table(_) | AppError::Sync(_) => Exit::Table,
            AppError::RowsFailed { .. } => Exit::RowsFailed,
            AppError::Maintain(MaintainError::RetentionTooShort(_)) => Exit::Usage,
            AppError::Maintain(_) => Exit::Table,
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
    let settings = Settings::resolve(&cli.global.overrides())?;
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
        Command::Sync(args) => sync(&ctx, &args).await,
        Command::Sandbox(args) => sandbox(&args).await,
        Command::Demo(args) => demo(&ctx, &args).await,
        Command::Sql(args) => sql(&ctx, &args).await,
        Command::Maintain(args) => maintain(&ctx, &args).await,
        Command::Ddl => {
            for spec in crate::tables::ALL {
                println!("{}", crate::tables::ddl::render(spec));
            }
            Ok(())
        }
    }
}

fn summarize(reports: &[SyncReport]) -> Result<(), AppError> {
    for r in reports {
        println!("{r}");
    }
    rows_failed(reports)
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

async fn sync(ctx: &Context, args: &SyncArgs) -> Result<(), AppError> {
    // Everything that can be wrong with the configuration is checked before a table is touched.
    let client = Client::new(ctx.settings.client_config()?)?;
    let opts = SyncOptions {
        page_size: args.page_size,
        batch_rows: args.batch_rows as usize,
        full: args.full,
        overlap: Duration::from_secs(args.overlap_secs),
        fail_after_pages: None,
    };
    let reports = run_sync(ctx, &client, args.target, &opts).await?;
    summarize(&reports)
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
    let mut cfg = SandboxConfig::for_tests(args.agents);
    cfg.world.seed = args.seed;
    let sb = Sandbox::start(cfg).await.map_err(|e| AppError::Internal(format!("cannot start the sandbox: {e}")))?;
    let base = sb.base_url();
    println!("pfsync demo: in-process sandbox at {base} ({} agents, seed {})", args.agents + 1, args.seed);
    println!("warehouse: {}", display_location(&ctx.settings.warehouse));
    let client = Client::new(ctx.settings.client_config_with_key(base.clone(), base, crate::sandbox::default_key()))?;
    let reports = run_sync(ctx, &client, SyncTarget::All, &SyncOptions::default()).await?;
    for r in &reports {
        println!("  {r}");
    }
    let sql = sql_context(&ctx.settings.warehouse).await?;
    println!("\ntables:");
    for spec in crate::tables::ALL {
        let count = query_count(&sql, spec.name).await?;
        println!("  {:<32} {:>8} rows  at {}", spec.name, count, ctx.settings.warehouse.location(&spec.table_name()));
    }
    println!("\nthe guide's high-balance query (sql/analyst/high_balances_ready_for_payout.sql), first 5 rows:");
    print_query(&sql, SEED_QUERY, 5).await?;
    println!(
        "\ntry your own:\n  pfsync --warehouse {} sql \"SELECT agent_id, balance_usd FROM purpleflea.agents.wallets ORDER BY balance_usd DESC LIMIT 5\"",
        display_location(&ctx.settings.warehouse)
    );
    sb.shutdown().await;
    rows_failed(&reports)
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
