//! Reconciliation: match the payout log against the provider's transactions (DataFusion SQL in
//! `sql/reconcile/`, loaded by `matching.rs`), check every wallet against the ledger, keep daily totals, and
//! record every finding with how long it has been open (`findings.rs`). Query results are decoded with their
//! types, by column name (`rows.rs`, `decode.rs`). A report people read comes from `report.rs`.

pub mod decisions;
pub mod decode;
pub mod findings;
pub mod live;
pub mod matching;
pub mod report;
pub mod rows;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;

use crate::money::Usd;
use crate::provider::records::TxKind;
use crate::tables::row::{Row, Text, table_row};
use crate::tables::{
    CommitInfo, DAILY_TOTALS, ESCROW_TERMS, LEDGER_ENTRIES, LEDGER_GAPS, PAYOUT_LOG, RECONCILIATION, TRANSACTIONS,
    TableError, WALLETS, Warehouse, open_existing, open_or_create, sql_context,
};
pub use decode::CellError;
pub use findings::{Class, FINDING_CLASSES, Finding, FindingRow, ReconciliationRow, carry_forward};
use matching::Params;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Table(#[from] TableError),
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
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Row(#[from] crate::tables::row::RowError),
    #[error("cannot write the report {path}: {source}")]
    Report { path: String, source: std::io::Error },
}

impl ReconcileError {
    pub fn class(&self) -> crate::errors::ErrorClass {
        use crate::errors::ErrorClass;
        match self {
            // A report path that cannot be written is the user's to fix; nothing else was left half done.
            ReconcileError::Report { .. } => ErrorClass::Usage,
            ReconcileError::Table(e) => e.class(),
            ReconcileError::Arrow(_) | ReconcileError::Row(_) => ErrorClass::Internal,
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
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions { namespace: "default".into(), stale_after: std::time::Duration::from_secs(3600) }
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

#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub run_id: String,
    pub operations: u64,
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

/// Findings and counts from the classified operations.
async fn classify_operations(
    ctx: &SessionContext,
    params: &Params,
    report: &mut ReconcileReport,
    out: &mut Vec<Finding>,
) -> Result<(), ReconcileError> {
    for c in rows::class_counts(&matching::collect(ctx, &matching::CLASS_COUNTS, params).await?)? {
        *report.counts.entry(c.class.as_str()).or_default() += c.operations;
        report.operations += c.operations;
    }
    report.matched_usd = rows::matched_total(&matching::collect(ctx, &matching::MATCHED_TOTAL, params).await?)?;
    out.extend(rows::operation_findings(&matching::collect(ctx, &matching::OPERATION_FINDINGS, params).await?)?);
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
    report.count(&found);
    out.extend(found);
    Ok(())
}

async fn daily_totals(ctx: &SessionContext, params: &Params, run_id: &str) -> Result<Vec<DailyTotal>, ReconcileError> {
    let totals = rows::daily_totals(&matching::collect(ctx, &matching::DAILY_TOTALS, params).await?)?;
    let matched = rows::daily_matched(&matching::collect(ctx, &matching::DAILY_MATCHED, params).await?)?;
    let matched: BTreeMap<(NaiveDate, &str), Usd> =
        matched.into_iter().map(|m| ((m.day, m.tx_kind.as_str()), m.matched)).collect();
    let mut out: Vec<DailyTotal> = totals
        .into_iter()
        .map(|t| DailyTotal {
            // A day and kind with no matched operation matched nothing: zero, not a missing value.
            matched_usd: matched.get(&(t.day, t.kind.as_str())).copied().unwrap_or(Usd::ZERO),
            day: t.day,
            kind: t.kind,
            transactions: t.transactions,
            amount_usd: t.amount,
            computed_run_id: run_id.to_string(),
        })
        .collect();
    out.sort_by(|a, b| (a.day, a.kind.as_str()).cmp(&(b.day, b.kind.as_str())));
    Ok(out)
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
    Ok(())
}

/// Match, classify, record. The transactions and wallets tables should have been synced just before
/// (`pfsync reconcile` does it).
pub async fn reconcile(
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    let now = Utc::now();
    let mut report = ReconcileReport { run_id: commit.run_id.clone(), at: now, ..ReconcileReport::default() };
    for spec in [&PAYOUT_LOG, &TRANSACTIONS, &RECONCILIATION, &LEDGER_ENTRIES, &LEDGER_GAPS, &ESCROW_TERMS] {
        open_or_create(wh, spec, commit).await?;
    }
    let ctx = sql_context(wh).await?;
    let params = opts.params(now);
    // What to check follows from which copy of the provider's money holds data, not from a provider name:
    // the seed's transaction list, or the live provider's ledgers (a warehouse with neither runs the seed's
    // checks, as before the live provider existed).
    let (ledger_rows, transaction_rows) = has_rows(&ctx, &params).await?;
    let mut found = Vec::new();
    if transaction_rows || !ledger_rows {
        matching::register_classified(&ctx, &params).await?;
        classify_operations(&ctx, &params, &mut report, &mut found).await?;
        provider_side(&ctx, &params, &mut report, &mut found).await?;
        report.provider_transactions =
            rows::provider_transactions(&matching::collect(&ctx, &matching::PROVIDER_TRANSACTIONS, &params).await?)?;
        report.daily = daily_totals(&ctx, &params, &commit.run_id).await?;
    }
    if ledger_rows {
        live_side(&ctx, &params, &mut report, &mut found).await?;
    }

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
    // Daily totals are derived: each run rewrites them whole.
    let totals = open_or_create(wh, &DAILY_TOTALS, commit).await?;
    if report.daily.is_empty() {
        return Ok(report);
    }
    totals
        .write(vec![DailyTotal::to_batch(&report.daily)?])
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| ReconcileError::Write { table: DAILY_TOTALS.name, source: Box::new(e) })?;
    Ok(report)
}
