//! What every step shares: the run's context, the provider connected, a step's outcome and its record in
//! `purpleflea.ops.runs`, and the exit of several steps together.

use std::collections::BTreeMap;

use super::error::AppError;
use crate::config::Settings;
use crate::exit::Exit;
use crate::money::Usd;
use crate::ops::RunRecord;
use crate::progress::Progress;
use crate::tables::{CommitInfo, Warehouse};

pub struct Context {
    pub settings: Settings,
    pub run_id: String,
    pub progress: bool,
}

/// The provider the settings choose, connected (its keys read and checked before any step runs), once the
/// warehouse is known to be initialised: a command that moves or syncs anything needs pfsync's tables.
pub(crate) async fn connect(ctx: &Context) -> Result<std::sync::Arc<dyn crate::provider::Provider>, AppError> {
    let common = ctx.settings.provider_common()?;
    require_initialised(ctx).await?;
    Ok(crate::provider::connect(&ctx.settings.provider, &common).await?)
}

/// Refuse a warehouse that holds none of pfsync's tables (exit 2): a mistyped `--warehouse` would otherwise
/// create or read nothing and report zero rows on every run. `pfsync init` creates them; `demo` makes its
/// own; `ddl` and `sandbox` touch no table.
pub(crate) async fn require_initialised(ctx: &Context) -> Result<(), AppError> {
    #[cfg(feature = "unity")]
    if ctx.settings.unity.is_some() {
        // Unity Catalog says where every table lives, and a name it does not know has stopped the run already
        // (`tables::unity`): registering the tables there is this warehouse's initialisation.
        return Ok(());
    }
    let wh = &ctx.settings.warehouse;
    if crate::tables::any_table_exists(wh).await? {
        return Ok(());
    }
    let at = display_location(wh);
    Err(AppError::Usage(format!(
        "no pfsync table at {at}{}: this warehouse was never initialised. If it is the one you mean, run \
         `pfsync init --warehouse {at}` once to create the tables; if not, check --warehouse, PFSYNC_WAREHOUSE \
         and the config file's `warehouse`",
        if wh.has_overrides() { " (nor at the locations the config file maps)" } else { "" }
    )))
}

pub(crate) fn step(ctx: &Context, step: &'static str, label: &str) -> (CommitInfo, Progress) {
    (CommitInfo { run_id: ctx.run_id.clone(), step }, Progress::new(ctx.progress, label))
}

/// What one step did (for `purpleflea.ops.runs`) and how it ended.
pub struct StepOutcome {
    pub rows: Option<i64>,
    pub amount: Option<Usd>,
    pub counts: BTreeMap<String, u64>,
    /// A step can finish its work and still end non-zero (rows refused, outcomes unknown, findings open).
    pub result: Result<(), AppError>,
    /// A dry run (`--dry-run`) writes no table, `purpleflea.ops.runs` included: its row would read as a run
    /// that paid.
    pub dry_run: bool,
}

/// Run a step and record it in `purpleflea.ops.runs` (not for usage errors: those touch nothing).
pub(crate) async fn recorded(
    ctx: &Context,
    step: &'static str,
    work: impl std::future::Future<Output = Result<StepOutcome, AppError>>,
) -> Result<(), AppError> {
    let started_at = chrono::Utc::now();
    let (record, result) = match work.await {
        Ok(o) if o.dry_run => return o.result,
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
pub(crate) fn worst(results: Vec<Result<(), AppError>>) -> Result<(), AppError> {
    let rank = |e: &AppError| match e.exit() {
        // A stopped run did not do all it was asked: that comes first (its message names what waits).
        Exit::Stopped => 0,
        Exit::OutcomeUnknown => 1,
        Exit::FindingsOpen => 2,
        Exit::BrakeHeld => 3,
        Exit::RowsFailed => 4,
        _ => 5,
    };
    let mut errors: Vec<AppError> = results.into_iter().filter_map(Result::err).collect();
    errors.sort_by_key(rank);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Where the warehouse is, as a person reads it: a folder path for a local one, else its URL.
pub(super) fn display_location(wh: &Warehouse) -> String {
    match wh.root().to_file_path() {
        Ok(p) => p.display().to_string(),
        Err(_) => wh.root().to_string(),
    }
}
