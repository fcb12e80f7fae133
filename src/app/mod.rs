//! The commands, run from parsed flags, and the mapping of their failures to exit codes.

pub(crate) mod backend;
mod demo;
mod mcp;
pub(crate) mod payouts;
mod query;
mod reconcile;
mod rules;
mod run;
mod sandbox;
mod sync;

use std::collections::BTreeMap;

use crate::api::ApiError;
use crate::cli::{Cli, Command};
use crate::config::{ConfigError, Settings};
use crate::errors::ErrorClass;
use crate::maintain::MaintainError;
use crate::money::Usd;
use crate::ops::RunRecord;
use crate::payouts::PayoutError;
use crate::progress::Progress;
use crate::reconcile::ReconcileError;
use crate::sync::SyncError;
use crate::tables::{CommitInfo, TableError};
pub use demo::SEED_QUERY;
use demo::demo;
use payouts::payouts_step;
pub use payouts::{payout_options, payout_outcome};
use query::{maintain, sql, status, tables};
pub use reconcile::fail_on;
use reconcile::reconcile_step;
use run::run_steps;
use sandbox::sandbox;
use sync::{sync_options, sync_step};

/// Declares `Exit` from one list, so a code cannot be added without its meaning, nor be missing from
/// [`Exit::ALL`] (which `pfsync --help` prints).
macro_rules! exit_codes {
    ($($name:ident = $code:literal: $meaning:literal,)*) => {
        /// Documented exit codes: `pfsync --help` lists every one with its meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Exit {
            $(#[doc = $meaning] $name = $code,)*
        }

        impl Exit {
            /// Every exit code, in order.
            pub const ALL: &'static [Exit] = &[$(Exit::$name),*];

            /// One line: what happened and what a scheduler should do about it.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Exit::$name => $meaning,)*
                }
            }
        }
    };
}

exit_codes! {
    Ok = 0: "success: everything reached a final state",
    Internal = 1: "unexpected internal error (retry, then alert)",
    Usage = 2: "usage or configuration error; nothing was touched (fix it, do not retry)",
    Api = 3: "the Purple Flea API failed after retries or refused the key (retry is safe)",
    Table = 4: "a Delta table could not be read or written: storage, schema (retry is safe)",
    RowsFailed = 5: "finished, but some rows were refused or failed (logged with id and reason)",
    OutcomeUnknown = 6: "some payouts have no known outcome yet; rerun: it resolves them by lookup",
    BrakeHeld = 7: "the safety brake (--max-total-usd, --max-count) held payouts back",
    FindingsOpen = 8: "reconciliation findings of the --fail-on classes are open",
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
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
    #[error(
        "{deferred} rule(s) were not decided in this run (--rules-max-secs or --rules-max-pages; see the warnings \
         above): the next run decides them, the other rules went through"
    )]
    RulesDeferred { deferred: u64 },
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

impl From<ErrorClass> for Exit {
    fn from(c: ErrorClass) -> Exit {
        match c {
            ErrorClass::Usage => Exit::Usage,
            ErrorClass::Transient | ErrorClass::Refused => Exit::Api,
            ErrorClass::Storage => Exit::Table,
            ErrorClass::Internal => Exit::Internal,
        }
    }
}

impl AppError {
    /// The exit code: from the failing layer's error class, or from how a finished step ended.
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Config(_) | AppError::Usage(_) => Exit::Usage,
            AppError::Api(e) => e.class().into(),
            AppError::Table(e) => e.class().into(),
            AppError::Sync(e) => e.class().into(),
            AppError::Maintain(e) => e.class().into(),
            AppError::Payout(e) => e.class().into(),
            AppError::Reconcile(e) => e.class().into(),
            AppError::RowsFailed { .. } | AppError::RulesDeferred { .. } => Exit::RowsFailed,
            AppError::OutcomeUnknown { .. } => Exit::OutcomeUnknown,
            AppError::BrakeHeld { .. } => Exit::BrakeHeld,
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
    crate::errors::quiet_caught_dependency_panics();
    #[allow(unused_mut)] // mutated only by the `unity` feature
    let mut settings = Settings::resolve(&cli.global.overrides())?;
    let run_id = match &cli.global.run_id {
        Some(id) if id.trim().is_empty() || id.len() > 200 => {
            return Err(AppError::Usage("--run-id must be 1..=200 characters".into()));
        }
        Some(id) => id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    // After the global flags are checked. `init` creates tables at the warehouse's own paths, for an admin to
    // register; `demo` makes its own local warehouse; every other command that touches tables finds them
    // through the catalog once they are registered.
    #[cfg(feature = "unity")]
    if let Some(section) = settings.unity.clone()
        && !matches!(cli.command, Command::Sandbox(_) | Command::Demo(_) | Command::Init | Command::Ddl(_))
    {
        let names: Vec<_> =
            crate::tables::ALL.iter().map(|s| s.table_name()).filter(|n| !settings.warehouse.is_mapped(n)).collect();
        for (name, url) in crate::tables::unity::resolve(&mut settings.warehouse, &section, names).await? {
            tracing::info!(table = %name, location = %url, "location from Unity Catalog");
        }
    }
    let ctx = Context { settings, run_id, progress: !cli.global.quiet };
    let span = tracing::info_span!("run", run_id = %ctx.run_id);
    let _guard = span.enter();
    match cli.command {
        Command::Run(args) => run_steps(&ctx, &args).await,
        Command::Sync(args) => {
            let backend = backend::Backend::connect(&ctx.settings).await?;
            recorded(&ctx, "sync", sync_step(&ctx, &backend, args.target, &sync_options(&args))).await
        }
        Command::Sandbox(args) => sandbox(&args).await,
        Command::Demo(args) => demo(&ctx, &args).await,
        Command::Sql(args) => sql(&ctx, &args).await,
        Command::Maintain(args) => maintain(&ctx, &args).await,
        Command::Payouts(args) => {
            let opts = payout_options(&args)?;
            let opts = payouts::with_client(&opts, &backend::Backend::client_config(&ctx.settings)?)?;
            let backend = backend::Backend::connect(&ctx.settings).await?;
            recorded(&ctx, "payouts", payouts_step(&ctx, &backend, &opts)).await
        }
        Command::Rules(rargs) => {
            let args = &rargs.payouts;
            if args.payouts_sql.is_some() || args.actions_sql.is_some() || !args.register.is_empty() {
                return Err(AppError::Usage(
                    "pfsync rules reads purpleflea.escrow.rules: --payouts-sql, --actions-sql and --register are for pfsync payouts"
                        .into(),
                ));
            }
            let opts = payout_options(args)?;
            let opts = payouts::with_client(&opts, &backend::Backend::client_config(&ctx.settings)?)?;
            let client = rules::mlflow_from_env()?;
            let backend = backend::Backend::connect(&ctx.settings).await?;
            let limits = rargs.limits.limits();
            recorded(&ctx, "rules", rules::rules_step(&ctx, &backend, &opts, client, limits)).await
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
        Command::Mcp(args) => mcp::mcp(&ctx, &args).await,
        Command::Ddl(args) => {
            let grantees = crate::tables::ddl::Grantees {
                readers: args.readers,
                job: args.job_principal,
                vended_credentials: !args.no_credential_vending,
            };
            print!("{}", crate::tables::ddl::script(&ctx.settings.warehouse, &grantees));
            Ok(())
        }
    }
}

pub(super) fn step(ctx: &Context, step: &'static str, label: &str) -> (CommitInfo, Progress) {
    (CommitInfo { run_id: ctx.run_id.clone(), step }, Progress::new(ctx.progress, label))
}

/// What one step did (for `purpleflea.ops.runs`) and how it ended.
pub struct StepOutcome {
    pub rows: Option<i64>,
    pub amount: Option<Usd>,
    pub counts: BTreeMap<String, u64>,
    /// A step can finish its work and still end non-zero (rows refused, outcomes unknown, findings open).
    pub result: Result<(), AppError>,
}

/// Run a step and record it in `purpleflea.ops.runs` (not for usage errors: those touch nothing).
pub(super) async fn recorded(
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

/// The most useful exit for a scheduler among steps that finished: retry-worthy first.
pub(super) fn worst(results: Vec<Result<(), AppError>>) -> Result<(), AppError> {
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

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn exit_codes_run_from_0_without_gaps_each_with_a_one_line_meaning() {
        for (i, e) in Exit::ALL.iter().enumerate() {
            assert_eq!(e.code() as usize, i, "{e:?}");
            assert!(!e.meaning().is_empty() && !e.meaning().contains('\n'), "{e:?}");
        }
        assert_eq!(Exit::ALL.last(), Some(&Exit::FindingsOpen));
    }
}
