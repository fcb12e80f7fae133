//! Reconciliation: match the payout log against the provider's transactions (DataFusion SQL in
//! `matching.rs`), check every wallet against the ledger, keep daily totals, and record every finding
//! with how long it has been open (`findings.rs`). A report people read comes from `report.rs`.

pub mod findings;
pub mod matching;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Array, ArrayRef, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;

use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::tables::{
    CommitInfo, DAILY_TOTALS, PAYOUT_LOG, RECONCILIATION, TRANSACTIONS, TableError, WALLETS, Warehouse, open_existing,
    open_or_create, sql_context,
};
pub use findings::{Class, FINDING_CLASSES, Finding, FindingRow, carry_forward};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("reconcile query failed: {0}")]
    Query(String),
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("cannot write the report {path}: {source}")]
    Report { path: String, source: std::io::Error },
}

fn q(e: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Query(e.to_string())
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

/// Money per day and provider kind.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyTotal {
    pub day: NaiveDate,
    pub kind: String,
    pub transactions: i64,
    pub amount: Usd,
    pub matched: Usd,
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
        self.open().filter(|r| r.finding.class.is_some_and(|c| classes.contains(&c))).count() as u64
    }
}

/// One column of query results as text (any type, via a cast), concatenated across batches.
fn texts(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<String>>, ReconcileError> {
    let mut out = Vec::new();
    for b in batches {
        let c = b.column_by_name(name).ok_or_else(|| q(format!("no column {name}")))?;
        let c = arrow::compute::cast(c, &DataType::Utf8)?;
        let s = c.as_any().downcast_ref::<StringArray>().ok_or_else(|| q("not text"))?;
        out.extend((0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i).to_string())));
    }
    Ok(out)
}

/// Several columns as text rows: `rows[i][k]` is column `names[k]` of row `i`.
fn text_rows(batches: &[RecordBatch], names: &[&str]) -> Result<Vec<Vec<Option<String>>>, ReconcileError> {
    let cols: Vec<Vec<Option<String>>> = names.iter().map(|c| texts(batches, c)).collect::<Result<_, _>>()?;
    let n = cols.first().map(Vec::len).unwrap_or(0);
    Ok((0..n).map(|i| cols.iter().map(|c| c[i].clone()).collect()).collect())
}

fn usd(s: &Option<String>) -> Option<Usd> {
    s.as_deref().and_then(|v| Usd::parse(v).ok())
}

async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, ReconcileError> {
    ctx.sql(sql).await.map_err(q)?.collect().await.map_err(q)
}

/// Findings and counts from the classified operations.
async fn classify_operations(
    ctx: &SessionContext,
    report: &mut ReconcileReport,
    out: &mut Vec<Finding>,
) -> Result<(), ReconcileError> {
    let counts = collect(ctx, "SELECT class, count(*) AS n FROM classified GROUP BY class").await?;
    let (classes, ns) = (texts(&counts, "class")?, texts(&counts, "n")?);
    for (c, n) in classes.iter().zip(ns) {
        if let Some(class) = c.as_deref().and_then(Class::parse) {
            let n: u64 = n.and_then(|n| n.parse().ok()).unwrap_or(0);
            *report.counts.entry(class.as_str()).or_default() += n;
            report.operations += n;
        }
    }
    let m = collect(
        ctx,
        "SELECT CAST(sum(t_amount) AS VARCHAR) AS s FROM classified WHERE class = 'matched' AND status = 'completed'",
    )
    .await?;
    report.matched_usd = texts(&m, "s")?.first().and_then(usd).unwrap_or(Usd::ZERO);

    let rows = collect(
        ctx,
        "SELECT class, operation_id, kind, status, idempotency_key, tx_ids, exp_agent, t_agent, \
         CAST(exp_amount AS VARCHAR) AS exp_amount, CAST(t_amount AS VARCHAR) AS t_amount, n, log_tx_id \
         FROM classified WHERE class NOT IN ('matched', 'in_progress')",
    )
    .await?;
    let rows = text_rows(
        &rows,
        &[
            "class",
            "operation_id",
            "kind",
            "status",
            "idempotency_key",
            "tx_ids",
            "exp_agent",
            "t_agent",
            "exp_amount",
            "t_amount",
            "n",
            "log_tx_id",
        ],
    )?;
    for row in rows {
        let get = |k: usize| row[k].clone();
        let Some(class) = get(0).as_deref().and_then(Class::parse) else { continue };
        let (exp_amount, act_amount) = (usd(&get(8)), usd(&get(9)));
        let detail = match class {
            Class::MissingAtProvider => format!(
                "the log says completed (tx {}) but the provider has no transaction for it",
                get(11).unwrap_or_else(|| "-".into())
            ),
            Class::DuplicateAtProvider => {
                format!("{} provider transactions carry this operation's key", get(10).unwrap_or_default())
            }
            Class::StatusMismatch => "the log says rejected but the provider shows money moved".to_string(),
            Class::StaleUnknown => {
                format!("{} with no final outcome for longer than the stale threshold", get(3).unwrap_or_default())
            }
            Class::UnloggedAtProvider => "the provider has it, the log has no completed row yet".to_string(),
            Class::AmountMismatch => format!(
                "the log says {} USD, the provider {} USD",
                exp_amount.map(|a| a.to_string()).unwrap_or_default(),
                act_amount.map(|a| a.to_string()).unwrap_or_default()
            ),
            Class::AgentMismatch => format!(
                "the log says agent {}, the provider {}",
                get(6).unwrap_or_default(),
                get(7).unwrap_or_default()
            ),
            _ => String::new(),
        };
        out.push(Finding {
            class: Some(class),
            operation_id: get(1),
            kind: get(2),
            idempotency_key: get(4),
            tx_ids: get(5),
            agent_id: get(6).or(get(7)),
            expected_agent: get(6),
            actual_agent: get(7),
            expected_amount: exp_amount,
            actual_amount: act_amount,
            detail,
        });
    }
    Ok(())
}

/// The other findings: provider transactions nobody logged, keyless double payments, wallet balances.
async fn provider_side(
    ctx: &SessionContext,
    opts: &ReconcileOptions,
    report: &mut ReconcileReport,
    out: &mut Vec<Finding>,
) -> Result<(), ReconcileError> {
    let prefix = format!("pfsync:{}:", opts.namespace);
    let rows = collect(ctx, &matching::UNLOGGED_AT_PROVIDER.replace("{prefix}", &prefix)).await?;
    let (tx, kind, agent, amount, key) = (
        texts(&rows, "tx_id")?,
        texts(&rows, "kind")?,
        texts(&rows, "agent_id")?,
        texts(&rows, "amount_usd")?,
        texts(&rows, "idempotency_key")?,
    );
    for i in 0..tx.len() {
        *report.counts.entry(Class::UnloggedAtProvider.as_str()).or_default() += 1;
        out.push(Finding {
            class: Some(Class::UnloggedAtProvider),
            kind: kind[i].clone(),
            idempotency_key: key[i].clone(),
            tx_ids: tx[i].clone(),
            agent_id: agent[i].clone(),
            actual_agent: agent[i].clone(),
            actual_amount: usd(&amount[i]),
            detail: "a provider transaction carries one of our keys, but no logged operation does".into(),
            ..Finding::default()
        });
    }
    let rows = collect(ctx, matching::UNATTRIBUTED_PAYOUTS).await?;
    let (tx, agent, amount, reason, op) = (
        texts(&rows, "tx_id")?,
        texts(&rows, "agent_id")?,
        texts(&rows, "amount_usd")?,
        texts(&rows, "reference")?,
        texts(&rows, "operation_id")?,
    );
    for i in 0..tx.len() {
        *report.counts.entry(Class::UnattributedPayout.as_str()).or_default() += 1;
        out.push(Finding {
            class: Some(Class::UnattributedPayout),
            operation_id: op[i].clone(),
            kind: Some("payout".into()),
            tx_ids: tx[i].clone(),
            agent_id: agent[i].clone(),
            actual_agent: agent[i].clone(),
            actual_amount: usd(&amount[i]),
            detail: format!(
                "a payout with no idempotency key equals logged payout {} (same agent, amount and reason {:?}): likely paid twice",
                op[i].as_deref().unwrap_or("-"),
                reason[i].as_deref().unwrap_or("")
            ),
            ..Finding::default()
        });
    }
    if ctx.table_exist(WALLETS.name).unwrap_or(false) {
        let rows = collect(ctx, matching::BALANCE_MISMATCHES).await?;
        let (agent, actual, expected) =
            (texts(&rows, "agent_id")?, texts(&rows, "actual_cents")?, texts(&rows, "expected_cents")?);
        let cents =
            |v: &Option<String>| v.as_deref().and_then(|c| c.parse::<i64>().ok()).and_then(|c| Usd::from_cents(c).ok());
        for i in 0..agent.len() {
            *report.counts.entry(Class::BalanceMismatch.as_str()).or_default() += 1;
            let (a, e) = (cents(&actual[i]), cents(&expected[i]));
            out.push(Finding {
                class: Some(Class::BalanceMismatch),
                agent_id: agent[i].clone(),
                expected_amount: e,
                actual_amount: a,
                detail: format!(
                    "wallet balance {} USD, the synced transactions imply {} USD",
                    a.map(|x| x.to_string()).unwrap_or_default(),
                    e.map(|x| x.to_string()).unwrap_or_default()
                ),
                ..Finding::default()
            });
        }
    }
    Ok(())
}

async fn daily_totals(ctx: &SessionContext) -> Result<Vec<DailyTotal>, ReconcileError> {
    let totals = collect(ctx, matching::DAILY_TOTALS).await?;
    let matched = collect(ctx, matching::DAILY_MATCHED).await?;
    let mut m: BTreeMap<(String, String), Usd> = BTreeMap::new();
    let (md, mk, mv) = (texts(&matched, "day")?, texts(&matched, "tx_kind")?, texts(&matched, "matched")?);
    for i in 0..md.len() {
        if let (Some(d), Some(k)) = (&md[i], &mk[i]) {
            m.insert((d.clone(), k.clone()), usd(&mv[i]).unwrap_or(Usd::ZERO));
        }
    }
    let (d, k, n, a) = (
        texts(&totals, "day")?,
        texts(&totals, "kind")?,
        texts(&totals, "transactions")?,
        texts(&totals, "amount_usd")?,
    );
    let mut out = Vec::new();
    for i in 0..d.len() {
        let (Some(day), Some(kind)) = (&d[i], &k[i]) else { continue };
        let Ok(date) = NaiveDate::parse_from_str(day, "%Y-%m-%d") else { continue };
        out.push(DailyTotal {
            day: date,
            kind: kind.clone(),
            transactions: n[i].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
            amount: usd(&a[i]).unwrap_or(Usd::ZERO),
            matched: m.get(&(day.clone(), kind.clone())).copied().unwrap_or(Usd::ZERO),
        });
    }
    out.sort_by(|a, b| (a.day, &a.kind).cmp(&(b.day, &b.kind)));
    Ok(out)
}

/// The previous run's open findings.
async fn previous_open(ctx: &SessionContext) -> Result<Vec<FindingRow>, ReconcileError> {
    if !ctx.table_exist(RECONCILIATION.name).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let rows = collect(
        ctx,
        "SELECT finding_key, class, operation_id, kind, idempotency_key, tx_ids, agent_id, expected_agent_id, actual_agent_id, \
         CAST(expected_amount_usd AS VARCHAR) AS e, CAST(actual_amount_usd AS VARCHAR) AS a, detail, first_seen_run, \
         CAST(first_seen_at AS BIGINT) AS first_us \
         FROM purpleflea.payouts.reconciliation \
         WHERE resolved_at IS NULL AND recorded_at = (SELECT max(recorded_at) FROM purpleflea.payouts.reconciliation)",
    )
    .await?;
    let names = [
        "finding_key",
        "class",
        "operation_id",
        "kind",
        "idempotency_key",
        "tx_ids",
        "agent_id",
        "expected_agent_id",
        "actual_agent_id",
        "e",
        "a",
        "detail",
        "first_seen_run",
        "first_us",
    ];
    let mut out = Vec::new();
    for row in text_rows(&rows, &names)? {
        let get = |k: usize| row[k].clone();
        let first_at = get(13).and_then(|v| v.parse::<i64>().ok()).and_then(to_time).unwrap_or_else(Utc::now);
        out.push(FindingRow {
            key: get(0).unwrap_or_default(),
            finding: Finding {
                class: get(1).as_deref().and_then(Class::parse),
                operation_id: get(2),
                kind: get(3),
                idempotency_key: get(4),
                tx_ids: get(5),
                agent_id: get(6),
                expected_agent: get(7),
                actual_agent: get(8),
                expected_amount: usd(&get(9)),
                actual_amount: usd(&get(10)),
                detail: get(11).unwrap_or_default(),
            },
            first_seen_run: get(12).unwrap_or_default(),
            first_seen_at: first_at,
            resolved_at: None,
        });
    }
    Ok(out)
}

/// Timestamps come back from a cast in the table's unit (microseconds).
fn to_time(us: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(us).single()
}

fn money(v: impl Iterator<Item = Option<Usd>>) -> Result<ArrayRef, ReconcileError> {
    Ok(Arc::new(
        v.map(|u| u.map(Usd::to_decimal128))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)?,
    ))
}

fn text<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn findings_batch(rows: &[FindingRow], run_id: &str, at: DateTime<Utc>) -> Result<RecordBatch, ReconcileError> {
    let ts = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) };
    let f = |r: &FindingRow| r.finding.clone();
    let columns: Vec<ArrayRef> = vec![
        text(rows.iter().map(|_| Some(run_id))),
        text(rows.iter().map(|r| Some(r.key.as_str()))),
        text(rows.iter().map(|r| Some(r.finding.class.map(Class::as_str).unwrap_or("unknown")))),
        text(rows.iter().map(|r| r.finding.operation_id.as_deref())),
        text(rows.iter().map(|r| r.finding.kind.as_deref())),
        text(rows.iter().map(|r| r.finding.idempotency_key.as_deref())),
        text(rows.iter().map(|r| r.finding.tx_ids.as_deref())),
        text(rows.iter().map(|r| r.finding.agent_id.as_deref())),
        text(rows.iter().map(|r| r.finding.expected_agent.as_deref())),
        text(rows.iter().map(|r| r.finding.actual_agent.as_deref())),
        money(rows.iter().map(|r| f(r).expected_amount))?,
        money(rows.iter().map(|r| f(r).actual_amount))?,
        text(rows.iter().map(|r| Some(r.finding.detail.as_str()))),
        text(rows.iter().map(|r| Some(r.first_seen_run.as_str()))),
        ts(rows.iter().map(|r| Some(r.first_seen_at.timestamp_micros())).collect()),
        ts(rows.iter().map(|r| r.resolved_at.map(|t| t.timestamp_micros())).collect()),
        ts(vec![Some(at.timestamp_micros()); rows.len()]),
    ];
    Ok(RecordBatch::try_new(RECONCILIATION.arrow_schema(), columns)?)
}

fn totals_batch(daily: &[DailyTotal], run_id: &str) -> Result<RecordBatch, ReconcileError> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(daily.iter().map(|d| Some((d.day - epoch).num_days() as i32)).collect::<Date32Array>()),
        text(daily.iter().map(|d| Some(d.kind.as_str()))),
        Arc::new(daily.iter().map(|d| Some(d.transactions)).collect::<Int64Array>()),
        money(daily.iter().map(|d| Some(d.amount)))?,
        money(daily.iter().map(|d| Some(d.matched)))?,
        text(daily.iter().map(|_| Some(run_id))),
    ];
    Ok(RecordBatch::try_new(DAILY_TOTALS.arrow_schema(), columns)?)
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
    for spec in [&PAYOUT_LOG, &TRANSACTIONS, &RECONCILIATION] {
        open_or_create(wh, spec, commit).await?;
    }
    let ctx = sql_context(wh).await?;
    let stale_before = (now - ChronoDuration::from_std(opts.stale_after).unwrap_or_else(|_| ChronoDuration::hours(1)))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let classified = ctx
        .sql(&matching::CLASSIFIED_OPERATIONS.replace("{stale_before}", &stale_before))
        .await
        .map_err(q)?
        .cache()
        .await
        .map_err(q)?;
    ctx.register_table("classified", classified.into_view()).map_err(q)?;
    let mut found = Vec::new();
    classify_operations(&ctx, &mut report, &mut found).await?;
    provider_side(&ctx, opts, &mut report, &mut found).await?;
    let n = collect(&ctx, "SELECT count(*) AS n FROM purpleflea.ledger.transactions").await?;
    report.provider_transactions = texts(&n, "n")?.first().cloned().flatten().and_then(|v| v.parse().ok()).unwrap_or(0);
    report.daily = daily_totals(&ctx).await?;

    let previous = previous_open(&ctx).await?;
    report.rows = carry_forward(&previous, found, &commit.run_id, now);
    if !report.rows.is_empty() {
        let table = open_existing(wh, &RECONCILIATION).await?.ok_or_else(|| q("reconciliation table vanished"))?;
        table
            .write(vec![findings_batch(&report.rows, &commit.run_id, now)?])
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
        .write(vec![totals_batch(&report.daily, &commit.run_id)?])
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| ReconcileError::Write { table: DAILY_TOTALS.name, source: Box::new(e) })?;
    Ok(report)
}
