//! The full rebuild: the whole payout log and ledger through the SQL of `sql/reconcile/` (the reference the
//! incremental runs are held to), in a DataFusion session with a memory limit that spills to disk, so memory
//! stays bounded whatever the history. Joins are sort-merge joins (DataFusion's hash joins hold their build
//! side in memory; sorts and aggregations spill), and the rows stream into the classification's files as
//! they come; a large history runs them once per bucket of operations (`passes.rs`), so a pass sorts a
//! fraction of it. Then the totals, then one commit that replaces the classification and records what it
//! covers.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type};
use chrono::{Days, NaiveDate};
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::coverage::Coverage;
use super::matching::{
    self, CLASSIFIED, DAILY_TOTALS as DAILY_TOTALS_QUERY, IMPLIED_BALANCES as BALANCES_QUERY, Params, Query,
    UNCLAIMED_TRANSACTIONS,
};
use super::passes::{self, Split};
use super::pool::RepartitionNeverSpills;
use super::state::{ImpliedBalance, Versions, tx_kind_of};
use super::stored::{self, Files};
use super::totals::{self, Daily};
use super::{Built, DailyTotal, ReconcileError, rows, stall};
use crate::hooks::{self, CrashPoint};
use crate::money::Usd;
use crate::operation::OpKind;
use crate::tables::row::Text;
use crate::tables::{
    CLASSIFICATION, CommitInfo, DAILY_TOTALS, IMPLIED_BALANCES, PAYOUT_LOG, TRANSACTIONS, Warehouse, open_or_create,
    register_tables,
};

/// A session whose operators share `memory_limit` bytes and spill to the OS temporary directory beyond it.
pub fn spilling_session(memory_limit: usize) -> Result<SessionContext, ReconcileError> {
    let runtime = RuntimeEnvBuilder::new()
        // Tracked: a query that runs out names the operators holding the memory.
        .with_memory_pool(Arc::new(RepartitionNeverSpills::new(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(memory_limit),
            std::num::NonZeroUsize::new(5).expect("5 is not zero"),
        )))))
        .with_disk_manager_builder(DiskManagerBuilder::default())
        .build_arc()
        .map_err(|e| ReconcileError::Query { query: "the rebuild's session", source: Box::new(e) })?;
    let mut config = SessionConfig::new();
    // A hash join keeps its whole build side (millions of operations) in memory and cannot spill; a
    // sort-merge join sorts both sides, and sorts spill.
    config.options_mut().optimizer.prefer_hash_join = false;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Add the matched money of the classified operations in `batch` (the classification's columns) per day and
/// kind: `Operation::matched`, over columns instead of rows.
fn add_matched(batch: &RecordBatch, into: &mut BTreeMap<(NaiveDate, &'static str), i64>) -> Result<(), ReconcileError> {
    let text = |name: &str| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>().cloned());
    let (Some(class), Some(status), Some(kind)) = (text("class"), text("status"), text("kind")) else {
        return Err(ReconcileError::Arrow(arrow::error::ArrowError::SchemaError("classification columns".into())));
    };
    let day = batch.column_by_name("provider_date").and_then(|c| c.as_primitive_opt::<Date32Type>().cloned());
    let amount =
        batch.column_by_name("provider_amount_usd").and_then(|c| c.as_primitive_opt::<Decimal128Type>().cloned());
    let (Some(day), Some(amount)) = (day, amount) else {
        return Err(ReconcileError::Arrow(arrow::error::ArrowError::SchemaError("classification columns".into())));
    };
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    for i in 0..batch.num_rows() {
        if class.is_null(i) || class.value(i) != "matched" || status.is_null(i) || status.value(i) != "completed" {
            continue;
        }
        if day.is_null(i) || amount.is_null(i) {
            continue;
        }
        let Some(op_kind) = <OpKind as Text>::parse(kind.value(i)) else { continue };
        let days = day.value(i);
        let date = if days >= 0 {
            epoch.checked_add_days(Days::new(days.unsigned_abs().into()))
        } else {
            epoch.checked_sub_days(Days::new(days.unsigned_abs().into()))
        };
        let Some(date) = date else { continue };
        let cents = Usd::from_decimal128(amount.value(i), 2)
            .map_err(|source| ReconcileError::Total(totals::Overflow { what: source.to_string() }))?
            .cents();
        *into.entry((date, tx_kind_of(op_kind).as_str())).or_default() += cents;
    }
    Ok(())
}

/// `work` of `query`, failing with [`ReconcileError::Stalled`] if it stops making progress.
async fn guarded<T>(
    query: &Query,
    work: impl std::future::Future<Output = Result<T, ReconcileError>>,
) -> Result<T, ReconcileError> {
    stall::unless_stalled(work, stall::LOOK_EVERY, stall::IDLE_LOOKS, stall::process_cpu)
        .await
        .map_err(|waited| ReconcileError::Stalled { query: query.file, secs: waited.as_secs() })?
}

/// Where a rebuild's classification rows go as its queries return them.
struct Sink {
    writer: deltalake::writer::RecordBatchWriter,
    versions: Versions,
    matched: BTreeMap<(NaiveDate, &'static str), i64>,
    operations: u64,
}

impl Sink {
    /// Write every batch of `query`'s `stream` (classified operations or unclaimed transactions).
    async fn drain(
        &mut self,
        query: &Query,
        mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    ) -> Result<(), ReconcileError> {
        while let Some(batch) = guarded(query, matching::next(query, &mut stream)).await? {
            let batch = stored::conform(&batch, &CLASSIFICATION, Some(self.versions))?;
            if query == &CLASSIFIED {
                self.operations += batch.num_rows() as u64;
                add_matched(&batch, &mut self.matched)?;
            }
            stored::write(&mut self.writer, batch).await?;
        }
        Ok(())
    }
}

/// How many events the payout log holds: what sizes the rebuild's passes.
async fn logged_events(ctx: &SessionContext, params: &Params) -> Result<u64, ReconcileError> {
    let batches = matching::collect(ctx, &LOGGED_EVENTS, params).await?;
    let count = batches.first().filter(|b| b.num_rows() == 1).and_then(|b| b.column(0).as_primitive_opt::<Int64Type>());
    Ok(count.map_or(0, |c| c.value(0).max(0).unsigned_abs()))
}

/// Counts the log's events.
const LOGGED_EVENTS: Query =
    Query { file: "the payout log's event count", sql: "SELECT count(*) FROM purpleflea.payouts.log" };

/// Rebuild everything reconcile keeps from the whole history, under `memory_limit` bytes of query memory,
/// in `passes` passes over buckets of operations (`None`: as many as the history's size and the limit
/// call for, see `passes.rs`).
pub async fn rebuild(
    wh: &Warehouse,
    commit: &CommitInfo,
    params: &Params,
    memory_limit: usize,
    passes: Option<u32>,
    reason: String,
) -> Result<Built, ReconcileError> {
    let ctx = spilling_session(memory_limit)?;
    let registered = register_tables(&ctx, wh, &[&PAYOUT_LOG, &TRANSACTIONS]).await?;
    let versions = Versions {
        log: registered.get(PAYOUT_LOG.name).copied().unwrap_or(-1),
        transactions: registered.get(TRANSACTIONS.name).copied().unwrap_or(-1),
    };
    let state = open_or_create(wh, &CLASSIFICATION, commit).await?;
    let mut sink = Sink { writer: stored::writer(&state)?, versions, matched: BTreeMap::new(), operations: 0 };
    let both = registered.contains_key(PAYOUT_LOG.name) && registered.contains_key(TRANSACTIONS.name);
    let passes = match passes {
        _ if !both => 1,
        Some(n) => n.clamp(1, passes::MAX_PASSES),
        None => passes::count(logged_events(&ctx, params).await?, memory_limit),
    };
    if passes == 1 {
        for query in [&CLASSIFIED, &UNCLAIMED_TRANSACTIONS] {
            sink.drain(query, guarded(query, matching::stream(&ctx, query, params)).await?).await?;
        }
    } else {
        let split = guarded(&passes::SPLIT, Split::new(&ctx, params, passes)).await?;
        tracing::info!(passes, operations = split.operations(), "rebuilding in passes over buckets of operations");
        for pass in 0..passes {
            for query in [&CLASSIFIED, &UNCLAIMED_TRANSACTIONS] {
                sink.drain(query, guarded(query, split.stream(pass, query, params)).await?).await?;
            }
            tracing::info!(pass = pass + 1, of = passes, classified = sink.operations, "rebuild pass done");
        }
        split.finish().await?;
    }
    let Sink { mut writer, matched, operations, .. } = sink;
    let adds = stored::flush(&mut writer).await?;

    let balances: Vec<ImpliedBalance> =
        rows::implied_balances(&guarded(&BALANCES_QUERY, matching::collect(&ctx, &BALANCES_QUERY, params)).await?)?
            .into_iter()
            .map(|(agent_id, implied_usd, transactions)| ImpliedBalance {
                agent_id,
                implied_usd,
                transactions,
                computed_run_id: commit.run_id.clone(),
            })
            .collect();
    let mut daily: Daily = BTreeMap::new();
    let totals = guarded(&DAILY_TOTALS_QUERY, matching::collect(&ctx, &DAILY_TOTALS_QUERY, params)).await?;
    for t in rows::daily_totals(&totals)? {
        let sums = totals::DaySums { transactions: t.transactions, amount: t.amount, matched: Usd::ZERO };
        daily.insert((t.day, t.kind.as_str()), (t.kind, sums));
    }
    totals::add_matched(&mut daily, &matched).map_err(ReconcileError::Total)?;
    let daily: Vec<DailyTotal> = totals::daily_rows(&daily, &commit.run_id);
    drop(ctx);

    let balances_version =
        stored::overwrite(open_or_create(wh, &IMPLIED_BALANCES, commit).await?, &IMPLIED_BALANCES, &balances, commit)
            .await?;
    let daily_version =
        stored::overwrite(open_or_create(wh, &DAILY_TOTALS, commit).await?, &DAILY_TOTALS, &daily, commit).await?;
    hooks::reached(CrashPoint::ReconcileAfterTotals).await;
    let covers = Coverage { versions, balances: balances_version, daily: daily_version };
    let removes = stored::removes(&state, Files::All).await?;
    stored::commit(&state, commit, removes, adds, &covers, true).await?;
    hooks::reached(CrashPoint::ReconcileAfterState).await;
    Ok(Built { daily, classified: operations, rebuilt: Some(reason) })
}
