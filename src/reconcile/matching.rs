//! The matching rules, as DataFusion SQL in `sql/reconcile/` (compiled in with `include_str!`, like the views
//! in `sql/views/`). Every operation lands in exactly one class (the `CASE` of `classified.sql`); every
//! provider transaction carrying one of our keys either belongs to an operation or is
//! `unlogged_at_provider`. A rebuild runs `classified.sql`, `unclaimed_transactions.sql`,
//! `implied_balances.sql` and `daily_totals.sql` over the whole history; the findings and totals are read
//! from the state they keep (`purpleflea.payouts.classification` and the totals). The rows each query returns
//! are decoded, with their types, in `rows.rs`.

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::SessionContext;

use super::ReconcileError;
use crate::tables::TableSpec;

/// One file of `sql/reconcile/`: its path (which errors name) and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub file: &'static str,
    pub sql: &'static str,
}

macro_rules! query {
    ($file:literal) => {
        Query { file: concat!("sql/reconcile/", $file), sql: include_str!(concat!("../../sql/reconcile/", $file)) }
    };
}

/// Operations joined to provider transactions and classified: the operations' classification rows.
pub const CLASSIFIED: Query = query!("classified.sql");
/// Provider transactions no operation's key claims: the other classification rows.
pub const UNCLAIMED_TRANSACTIONS: Query = query!("unclaimed_transactions.sql");
/// What the transactions imply per agent.
pub const IMPLIED_BALANCES: Query = query!("implied_balances.sql");
/// Operations per class.
pub const CLASS_COUNTS: Query = query!("class_counts.sql");
/// Provider money of matched, completed operations.
pub const MATCHED_TOTAL: Query = query!("matched_total.sql");
/// Classified operations that are findings.
pub const OPERATION_FINDINGS: Query = query!("operation_findings.sql");
/// Provider transactions with our key that no logged operation carries.
pub const UNLOGGED_AT_PROVIDER: Query = query!("unlogged_at_provider.sql");
/// Keyless provider payouts equal to a completed logged payout.
pub const UNATTRIBUTED_PAYOUTS: Query = query!("unattributed_payouts.sql");
/// Wallet balances the synced transactions do not explain.
pub const BALANCE_MISMATCHES: Query = query!("balance_mismatches.sql");
/// Provider money per day and kind.
pub const DAILY_TOTALS: Query = query!("daily_totals.sql");
/// How many provider transactions there are.
pub const PROVIDER_TRANSACTIONS: Query = query!("provider_transactions.sql");
/// The previous run's open findings.
pub const PREVIOUS_OPEN: Query = query!("previous_open.sql");
/// Live provider: which copies of the provider's money hold rows.
pub const LIVE_HAS_ROWS: Query = query!("live_has_rows.sql");
/// Live provider: operations with their status.
pub const LIVE_OPERATIONS: Query = query!("live_operations.sql");
/// Live provider: synced ledger entries, chain order per agent.
pub const LIVE_LEDGER_ENTRIES: Query = query!("live_ledger_entries.sql");
/// Live provider: escrows with exact amounts.
pub const LIVE_ESCROWS: Query = query!("live_escrows.sql");
/// Live provider: gaps syncs found.
pub const LIVE_LEDGER_GAPS: Query = query!("live_ledger_gaps.sql");
/// Live provider: wallet balances.
pub const LIVE_WALLETS: Query = query!("live_wallets.sql");
/// pfsync's own operations per day, kind, status and class, with their logged money (the report).
pub const OWN_OPERATIONS: Query = query!("own_operations.sql");
/// Refused source rows, one line per row and reason (the report).
pub const REFUSED_ROWS: Query = query!("refused_rows.sql");

/// Every file of `sql/reconcile/`; a test checks the folder holds exactly these.
pub const QUERIES: &[&Query] = &[
    &CLASSIFIED,
    &UNCLAIMED_TRANSACTIONS,
    &IMPLIED_BALANCES,
    &CLASS_COUNTS,
    &MATCHED_TOTAL,
    &OPERATION_FINDINGS,
    &UNLOGGED_AT_PROVIDER,
    &UNATTRIBUTED_PAYOUTS,
    &BALANCE_MISMATCHES,
    &DAILY_TOTALS,
    &PROVIDER_TRANSACTIONS,
    &PREVIOUS_OPEN,
    &LIVE_HAS_ROWS,
    &LIVE_OPERATIONS,
    &LIVE_LEDGER_ENTRIES,
    &LIVE_ESCROWS,
    &LIVE_LEDGER_GAPS,
    &LIVE_WALLETS,
    &OWN_OPERATIONS,
    &REFUSED_ROWS,
];

/// The name under which [`register_classified`] registers [`CLASSIFIED`]'s result.
pub const CLASSIFIED_TABLE: &str = "classified";

/// The values the queries take as named parameters (`$stale_before`, `$key_prefix`). They are bound as typed
/// values, never spliced into the SQL text: the namespace comes from a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// An operation with no final outcome recorded before this instant is `stale_unknown`.
    pub stale_before: DateTime<Utc>,
    /// Keys starting with this are ours: `pfsync:<namespace>:`.
    pub key_prefix: String,
}

impl Params {
    fn values(&self) -> ParamValues {
        // Every query gets every value (by name); a query uses the ones it names.
        ParamValues::from(vec![
            (
                "stale_before",
                ScalarValue::TimestampMicrosecond(Some(self.stale_before.timestamp_micros()), Some("UTC".into())),
            ),
            ("key_prefix", ScalarValue::Utf8(Some(self.key_prefix.clone()))),
        ])
    }
}

fn failed(query: &'static str) -> impl FnOnce(datafusion::error::DataFusionError) -> ReconcileError {
    move |source| ReconcileError::Query { query, source: Box::new(source) }
}

/// One query's result. The queries return findings and per-class or per-day totals, so the batches are few.
pub async fn collect(ctx: &SessionContext, query: &Query, params: &Params) -> Result<Vec<RecordBatch>, ReconcileError> {
    ctx.sql(query.sql)
        .await
        .and_then(|df| df.with_param_values(params.values()))
        .map_err(failed(query.file))?
        .collect()
        .await
        .map_err(failed(query.file))
}

/// One query's result as a stream of batches, for the queries of a rebuild, whose results are as large as
/// the history: the caller writes them as they come.
pub async fn stream(
    ctx: &SessionContext,
    query: &Query,
    params: &Params,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream, ReconcileError> {
    ctx.sql(query.sql)
        .await
        .and_then(|df| df.with_param_values(params.values()))
        .map_err(failed(query.file))?
        .execute_stream()
        .await
        .map_err(failed(query.file))
}

/// A stream's next batch, its error named after the query.
pub async fn next(
    query: &Query,
    stream: &mut datafusion::physical_plan::SendableRecordBatchStream,
) -> Result<Option<RecordBatch>, ReconcileError> {
    use futures::StreamExt;
    stream.next().await.transpose().map_err(failed(query.file))
}

/// Run [`CLASSIFIED`] once, keep its result in memory and register it as [`CLASSIFIED_TABLE`]: a look at
/// every operation's class from scratch, as a rebuild computes it (small warehouses only: it is held whole).
pub async fn register_classified(ctx: &SessionContext, params: &Params) -> Result<(), ReconcileError> {
    let classified = ctx
        .sql(CLASSIFIED.sql)
        .await
        .and_then(|df| df.with_param_values(params.values()))
        .map_err(failed(CLASSIFIED.file))?
        .cache()
        .await
        .map_err(failed(CLASSIFIED.file))?;
    ctx.register_table(CLASSIFIED_TABLE, classified.into_view()).map_err(failed(CLASSIFIED.file))?;
    Ok(())
}

/// Whether a table is registered in the session (the wallets table is there only once wallets were synced).
/// Looked up level by level: a catalog or schema that is not registered means the table is not there either.
pub fn table_exists(ctx: &SessionContext, table: &TableSpec) -> bool {
    let name = table.table_name();
    ctx.catalog(&name.catalog).and_then(|c| c.schema(&name.schema)).is_some_and(|s| s.table_exist(&name.table))
}
