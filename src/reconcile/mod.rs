//! Reconciliation: match the payout log against the provider's transactions (DataFusion SQL in
//! `sql/reconcile/`, loaded by `matching.rs`), check every wallet against the ledger, keep daily totals, and
//! record every finding with how long it has been open (`findings.rs`). Query results are decoded with their
//! types, by column name (`rows.rs`, `decode.rs`). A report people read comes from `report.rs`.
//!
//! The work follows what changed, not the history. What a run concluded is kept (`state.rs`: the
//! classification of every operation, the implied balances, the daily totals, with the versions they cover,
//! `coverage.rs`); the next run reads the log events and transactions appended since (`changes.rs`) and the
//! rows they concern, and applies the same rules to them (`merge.rs`, `classify.rs`, `totals.rs`:
//! `incremental.rs`). A rebuild (`--full`, a first run, or history that is not plain appends since) runs the
//! SQL over everything with bounded memory (`rebuild.rs`); it is the reference the incremental rules are
//! tested against. The findings are then read from the state (`stored.rs`).

pub mod changes;
pub mod classify;
pub mod coverage;
pub mod decisions;
pub mod decode;
pub mod findings;
pub mod incremental;
pub mod limits;
pub mod live;
pub mod live_totals;
pub mod matching;
pub mod merge;
pub mod own;
pub mod passes;
pub mod pool;
pub mod rebuild;
pub mod refused;
pub mod report;
pub mod rows;
pub mod stall;
pub mod state;
pub mod stored;
pub mod totals;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;

use crate::money::Usd;
use crate::provider::records::TxKind;
use crate::tables::row::{Row, Text, table_row};
use crate::tables::{
    CommitInfo, DAILY_TOTALS, ESCROW_TERMS, LEDGER_ENTRIES, LEDGER_GAPS, PAYOUT_LOG, RECONCILIATION, REJECTS,
    TRANSACTIONS, TableError, WALLETS, Warehouse, open_existing, open_or_create, sql_context, sql_context_of,
};
pub use decode::CellError;
pub use findings::{Class, FINDING_CLASSES, Finding, FindingRow, ReconciliationRow, carry_forward};
use matching::Params;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Table(#[from] TableError),
    /// A rebuild's query stopped making progress without failing (`stall.rs`).
    #[error(
        "reconcile query {query} stalled: no batch and no CPU spent for {secs} s (a rebuild under too little memory \
         can stall); raise --memory-limit-mib"
    )]
    Stalled { query: &'static str, secs: u64 },
    #[error("reconcile query {query} failed: {source}")]
    Query {
        query: &'static str,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// A row an auditor would rely on that does not hold what its query promises (a NULL amount, a class
    /// no rule gives): the run stops rather than record a blank or a default in its place.
    #[error("{query}: cannot decode row {row}: {source}")]
    Undecodable {
        query: &'static str,
        row: String,
        #[source]
        source: CellError,
    },
    #[error("{query} returned {found} rows, expected {expected}")]
    RowCount { query: &'static str, expected: usize, found: usize },
    #[error("table {table} was created at the start of the run but is gone now")]
    Vanished { table: &'static str },
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("reading {table} failed: {source}")]
    Read { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("a total cannot be kept: {0}")]
    Total(totals::Overflow),
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Row(#[from] crate::tables::row::RowError),
    #[error("the {what} are beyond the largest amount of money pfsync represents")]
    Sum { what: &'static str },
    #[error("cannot write the report {path}: {source}")]
    Report { path: String, source: std::io::Error },
    /// A rebuild in passes could not write or close its bucket files (TMPDIR full or not writable).
    #[error("the rebuild's bucket files in {path}: {source}; TMPDIR needs room for about 60 bytes per operation")]
    BucketFiles { path: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl ReconcileError {
    /// A query that ran out of the memory it was given (`--memory-limit-mib`): a rerun fails the same way.
    pub fn out_of_memory(&self) -> bool {
        matches!(self, ReconcileError::Query { source, .. }
            if matches!(source.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_)))
    }

    pub fn class(&self) -> crate::errors::ErrorClass {
        use crate::errors::ErrorClass;
        match self {
            // A report path that cannot be written is the user's to fix; nothing else was left half done.
            ReconcileError::Report { .. } => ErrorClass::Usage,
            // The same limit stalls the same way: a retry does not help, a larger limit does.
            ReconcileError::Stalled { .. } => ErrorClass::Usage,
            ReconcileError::Table(e) => e.class(),
            ReconcileError::Arrow(_)
            | ReconcileError::Row(_)
            | ReconcileError::Total(_)
            | ReconcileError::Sum { .. } => ErrorClass::Internal,
            _ => ErrorClass::Storage,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Keys of this namespace are ours (`pfsync:<namespace>:`).
    pub namespace: String,
    /// An intent with no final outcome older than this is `stale_unknown`.
    pub stale_after: std::time::Duration,
    /// Rebuild the state from the whole history instead of reading what changed.
    pub full: bool,
    /// Bytes of memory a rebuild's queries may hold before they spill to disk.
    pub memory_limit: usize,
    /// Passes a rebuild makes over buckets of operations; `None`: from the history's size and the memory
    /// limit (`passes.rs`).
    pub passes: Option<u32>,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            namespace: "default".into(),
            stale_after: std::time::Duration::from_secs(3600),
            full: false,
            memory_limit: limits::DEFAULT_MEMORY_LIMIT_MIB as usize * 1024 * 1024,
            passes: None,
        }
    }
}

impl ReconcileOptions {
    /// The queries' parameters for a run at `now`.
    fn params(&self, now: DateTime<Utc>) -> Params {
        // A threshold beyond the calendar means nothing is stale yet: the earliest instant, not a default.
        let stale_before = ChronoDuration::from_std(self.stale_after)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Params { stale_before, key_prefix: format!("pfsync:{}:", self.namespace) }
    }
}

table_row! {
    /// Money per day and provider kind: one row of the daily totals table.
    pub struct DailyTotal: DAILY_TOTALS, key(day, kind) {
        pub day: NaiveDate,
        pub kind: TxKind,
        pub transactions: i64,
        pub amount_usd: Usd,
        /// Of which matched to a completed pfsync operation.
        pub matched_usd: Usd,
        pub computed_run_id: String,
    }
}

impl Text for TxKind {
    const WHAT: &'static str = "a provider transaction kind";
    fn as_str(self) -> &'static str {
        TxKind::as_str(self)
    }
    fn parse(s: &str) -> Option<TxKind> {
        [TxKind::Payout, TxKind::EscrowLock, TxKind::EscrowRelease, TxKind::EscrowRefund, TxKind::Faucet]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What the state step of a run did: the daily totals it left, how many operations it classified (all of
/// them in a rebuild, the changed and unsettled ones otherwise), and why it rebuilt, if it did.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub daily: Vec<DailyTotal>,
    pub classified: u64,
    pub rebuilt: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub run_id: String,
    pub operations: u64,
    /// Operations this run classified: every one when it rebuilt, else those new data or the time concerns.
    pub classified: u64,
    /// Why this run rebuilt its state from the whole history (`None`: it read only what changed).
    pub rebuilt: Option<String>,
    pub provider_transactions: u64,
    /// Operations and provider transactions per class (matched and in_progress included).
    pub counts: BTreeMap<&'static str, u64>,
    pub matched_usd: Usd,
    /// This run's rows: open findings and resolutions.
    pub rows: Vec<FindingRow>,
    pub daily: Vec<DailyTotal>,
    /// Operations a person decided about (`pfsync resolve`), with who and why.
    pub decisions: Vec<decisions::PersonDecision>,
    pub at: DateTime<Utc>,
    /// The namespace whose keys are ours, and the warehouse root: what the report was made of.
    pub namespace: String,
    pub warehouse: String,
    /// pfsync's own operations per day and kind, and the money at risk.
    pub own: own::Own,
    /// Source rows validation refused (`purpleflea.payouts.rejects`), newest first.
    pub refused: Vec<refused::RefusedRow>,
}

impl ReconcileReport {
    pub fn open(&self) -> impl Iterator<Item = &FindingRow> {
        self.rows.iter().filter(|r| r.resolved_at.is_none())
    }

    pub fn resolved(&self) -> impl Iterator<Item = &FindingRow> {
        self.rows.iter().filter(|r| r.resolved_at.is_some())
    }

    /// Open findings of the given classes.
    pub fn failing(&self, classes: &[Class]) -> u64 {
        self.open().filter(|r| classes.contains(&r.finding.class)).count() as u64
    }

    /// Count `findings` under their classes.
    fn count(&mut self, findings: &[Finding]) {
        for f in findings {
            *self.counts.entry(f.class.as_str()).or_default() += 1;
        }
    }
}

/// Findings and counts from the classification: the unsettled operations by class, the settled ones
/// counted, and the matched money from the daily totals.
async fn classify_operations(
    ctx: &SessionContext,
    params: &Params,
    report: &mut ReconcileReport,
    out: &mut Vec<Finding>,
) -> Result<(), ReconcileError> {
    for c in rows::class_counts(&matching::collect(ctx, &matching::CLASS_COUNTS, params).await?)? {
        if c.operations == 0 {
            continue;
        }
        *report.counts.entry(c.class.as_str()).or_default() += c.operations;
        report.operations += c.operations;
    }
    report.matched_usd = rows::matched_total(&matching::collect(ctx, &matching::MATCHED_TOTAL, params).await?)?;
    out.extend(rows::operation_findings(&matching::collect(ctx, &matching::OPERATION_FINDINGS, params).await?)?);
    report.own = own::fold(own::groups(&matching::collect(ctx, &matching::OWN_OPERATIONS, params).await?)?)?;
    Ok(())
}

/// The other findings: provider transactions nobody logged, keyless double payments, wallet balances.
async fn provider_side(
    ctx: &SessionContext,
    params: &Params,
    report: &mut ReconcileReport,
    out: &mut Vec<Finding>,
) -> Result<(), ReconcileError> {
    let mut found =
        rows::unlogged_at_provider(&matching::collect(ctx, &matching::UNLOGGED_AT_PROVIDER, params).await?)?;
    found.extend(rows::unattributed_payouts(&matching::collect(ctx, &matching::UNATTRIBUTED_PAYOUTS, params).await?)?);
    if matching::table_exists(ctx, &WALLETS) {
        found.extend(rows::balance_mismatches(&matching::collect(ctx, &matching::BALANCE_MISMATCHES, params).await?)?);
    }
    // The same findings in the same order whichever way the state was reached: carry_forward keeps the first
    // finding of a key.
    found.sort_by(|a, b| (a.key(), &a.tx_ids).cmp(&(b.key(), &b.tx_ids)));
    report.count(&found);
    out.extend(found);
    Ok(())
}

/// Bring the state up to date: from what changed when it can, else (or with `--full`) from everything.
async fn build_state(
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &ReconcileOptions,
    params: &Params,
) -> Result<Built, ReconcileError> {
    let why = if opts.full {
        "--full".to_string()
    } else {
        match incremental::advance(wh, commit, params).await? {
            Ok(built) => return Ok(built),
            Err(why) => why,
        }
    };
    tracing::info!(reason = %why, "reconcile rebuilds its state from the whole history");
    rebuild::rebuild(wh, commit, params, opts.memory_limit, opts.passes, why).await
}

/// The previous run's open findings.
async fn previous_open(ctx: &SessionContext, params: &Params) -> Result<Vec<FindingRow>, ReconcileError> {
    if !matching::table_exists(ctx, &RECONCILIATION) {
        return Ok(Vec::new());
    }
    rows::previous_open(&matching::collect(ctx, &matching::PREVIOUS_OPEN, params).await?)
}

/// Which copies of the provider's money hold rows: the live ledger entries, the seed's transactions.
async fn has_rows(ctx: &SessionContext, params: &Params) -> Result<(bool, bool), ReconcileError> {
    let b = matching::collect(ctx, &matching::LIVE_HAS_ROWS, params).await?;
    decode::decode_one(&matching::LIVE_HAS_ROWS, &b, |r| {
        Ok((r.count("ledger_entries")? > 0, r.count("transactions")? > 0))
    })
}

/// The live provider's checks (`live.rs`): operations against the synced ledgers and escrow states.
async fn live_side(
    ctx: &SessionContext,
    params: &Params,
    report: &mut ReconcileReport,
    out: &mut Vec<Finding>,
) -> Result<(), ReconcileError> {
    let data = live::LiveData {
        ops: live::operations(&matching::collect(ctx, &matching::LIVE_OPERATIONS, params).await?)?,
        entries: live::entries(&matching::collect(ctx, &matching::LIVE_LEDGER_ENTRIES, params).await?)?,
        escrows: live::escrows(&matching::collect(ctx, &matching::LIVE_ESCROWS, params).await?)?,
        gaps: live::gaps(&matching::collect(ctx, &matching::LIVE_LEDGER_GAPS, params).await?)?,
        wallets: if matching::table_exists(ctx, &WALLETS) {
            live::wallets(&matching::collect(ctx, &matching::LIVE_WALLETS, params).await?)?
        } else {
            Vec::new()
        },
    };
    let outcome = live::check(&data, params.stale_before);
    for (class, n) in &outcome.op_classes {
        let class = Class::parse(class).map(Class::as_str).unwrap_or("matched");
        *report.counts.entry(class).or_default() += n;
    }
    report.operations += outcome.operations;
    report.matched_usd = report.matched_usd.checked_add(outcome.matched).unwrap_or(report.matched_usd);
    report.provider_transactions += data.entries.len() as u64;
    // Operation findings are counted with their operation's class above; the rest here.
    let others: Vec<Finding> = outcome.findings.iter().filter(|f| f.operation_id.is_none()).cloned().collect();
    report.count(&others);
    out.extend(outcome.findings);
    report.own = own::fold(live_totals::own_groups(&data, &outcome.classes))?;
    report.daily = live_daily(&data, &outcome.classes, &report.run_id);
    Ok(())
}

/// The live provider's daily totals, in the table's exact cents. A day and kind whose total is not whole
/// cents (escrow credits are the amount less a 1% commission, to six decimals) is left out with a warning:
/// rounding it would put a figure in an audit table that the provider never recorded. The entries hold it
/// exactly.
fn live_daily(data: &live::LiveData, classes: &[Class], run_id: &str) -> Vec<DailyTotal> {
    let mut out = Vec::new();
    for d in live_totals::daily(data, classes) {
        match (d.amount.to_usd_exact(), d.matched.to_usd_exact()) {
            (Some(amount_usd), Some(matched_usd)) => out.push(DailyTotal {
                day: d.day,
                kind: d.kind,
                transactions: d.transactions,
                amount_usd,
                matched_usd,
                computed_run_id: run_id.to_string(),
            }),
            _ => tracing::warn!(
                day = %d.day,
                kind = d.kind.as_str(),
                amount_usd = %d.amount,
                matched_usd = %d.matched,
                "a live daily total is not whole cents: left out of purpleflea.ops.daily_totals (exact in purpleflea.ledger.entries)"
            ),
        }
    }
    out
}

/// Refused source rows, when the rejects table exists (payouts created it).
async fn refused_rows(ctx: &SessionContext, params: &Params) -> Result<Vec<refused::RefusedRow>, ReconcileError> {
    if !matching::table_exists(ctx, &REJECTS) {
        return Ok(Vec::new());
    }
    refused::rows(&matching::collect(ctx, &matching::REFUSED_ROWS, params).await?)
}

/// Match, classify, record. The transactions and wallets tables should have been synced just before
/// (`pfsync reconcile` does it).
pub async fn reconcile(
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    reconcile_at(wh, commit, opts, Utc::now()).await
}

/// [`reconcile`] as of `now`: what is stale is judged by it, and findings are stamped with it.
pub async fn reconcile_at(
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &ReconcileOptions,
    now: DateTime<Utc>,
) -> Result<ReconcileReport, ReconcileError> {
    let mut report = ReconcileReport {
        run_id: commit.run_id.clone(),
        at: now,
        namespace: opts.namespace.clone(),
        warehouse: report::shown_location(wh.root()),
        ..ReconcileReport::default()
    };
    for spec in [&PAYOUT_LOG, &TRANSACTIONS, &RECONCILIATION, &LEDGER_ENTRIES, &LEDGER_GAPS, &ESCROW_TERMS] {
        open_or_create(wh, spec, commit).await?;
    }
    let ctx = sql_context_of(wh, &[&LEDGER_ENTRIES, &TRANSACTIONS]).await?;
    let params = opts.params(now);
    // What to check follows from which copy of the provider's money holds data, not from a provider name:
    // the seed's transaction list, or the live provider's ledgers (a warehouse with neither runs the seed's
    // checks, as before the live provider existed).
    let (ledger_rows, transaction_rows) = has_rows(&ctx, &params).await?;
    let mut found = Vec::new();
    let seed_checks = transaction_rows || !ledger_rows;
    if seed_checks {
        let built = build_state(wh, commit, opts, &params).await?;
        report.classified = built.classified;
        report.rebuilt = built.rebuilt;
        report.daily = built.daily;
    }
    // Opened after the state was written: the findings are read from it.
    let ctx = sql_context(wh).await?;
    if seed_checks {
        classify_operations(&ctx, &params, &mut report, &mut found).await?;
        provider_side(&ctx, &params, &mut report, &mut found).await?;
        report.provider_transactions =
            rows::provider_transactions(&matching::collect(&ctx, &matching::PROVIDER_TRANSACTIONS, &params).await?)?;
    }
    if ledger_rows {
        live_side(&ctx, &params, &mut report, &mut found).await?;
    }
    report.refused = refused_rows(&ctx, &params).await?;

    report.decisions = decisions::read(&ctx, &found).await?;
    let previous = previous_open(&ctx, &params).await?;
    report.rows = carry_forward(&previous, found, &commit.run_id, now);
    if !report.rows.is_empty() {
        let table =
            open_existing(wh, &RECONCILIATION).await?.ok_or(ReconcileError::Vanished { table: RECONCILIATION.name })?;
        table
            .write(vec![ReconciliationRow::to_batch(
                &report.rows.iter().map(|r| r.to_row(&commit.run_id, now)).collect::<Vec<_>>(),
            )?])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| ReconcileError::Write { table: RECONCILIATION.name, source: Box::new(e) })?;
    }
    if ledger_rows && !seed_checks && !report.daily.is_empty() {
        // The live provider's totals come from the ledger copy whole, each run (the seed's are kept by the
        // state step from what changed).
        open_or_create(wh, &DAILY_TOTALS, commit)
            .await?
            .write(vec![DailyTotal::to_batch(&report.daily)?])
            .with_save_mode(SaveMode::Overwrite)
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| ReconcileError::Write { table: DAILY_TOTALS.name, source: Box::new(e) })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;

    #[test]
    fn a_query_out_of_its_memory_is_told_apart_from_a_storage_failure() {
        let oom = ReconcileError::Query {
            query: "classified.sql",
            source: Box::new(DataFusionError::Shared(std::sync::Arc::new(DataFusionError::ResourcesExhausted(
                "Failed to allocate".into(),
            )))),
        };
        assert!(oom.out_of_memory());
        let io = ReconcileError::Query {
            query: "classified.sql",
            source: Box::new(DataFusionError::Execution("object store".into())),
        };
        assert!(!io.out_of_memory());
    }
}
