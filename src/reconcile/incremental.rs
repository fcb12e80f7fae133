//! A run that reads only what changed since the state's coverage: the log events and transactions the
//! commits after it appended (`changes.rs`), the unsettled classification rows, the files of settled rows
//! those events and transactions concern (found by a lookup that reads the id and key columns only, and skips
//! files by their statistics), and the totals at the versions the coverage pins. The rules are `merge.rs`;
//! the writes are the totals, then one commit of the classification with its new coverage.
//!
//! When it cannot run it says why, and the caller rebuilds: no state yet, history since that is not plain
//! appends, or more rows than it holds in memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Decimal128Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use super::changes;
use super::coverage::{self, Coverage};
use super::decode::decode;
use super::matching::{Params, Query};
use super::merge::{CompletedPayout, Held, Merge, Origin, is_keyless_payout};
use super::state::{ClassificationRow, ImpliedBalance, Subject, Tx, Versions};
use super::stored::{self, FILE_COLUMN, Files};
use super::totals;
use super::{Built, DailyTotal, ReconcileError};
use crate::hooks::{self, CrashPoint};
use crate::payouts::event::LogEvent;
use crate::sync::rows::TransactionRow;
use crate::tables::row::{Row, row_name};
use crate::tables::{
    CLASSIFICATION, CommitInfo, DAILY_TOTALS, IMPLIED_BALANCES, PAYOUT_LOG, TRANSACTIONS, Warehouse, open_existing,
    open_or_create, open_version, version_of,
};

use super::limits::MAX_INCREMENTAL_ROWS as MAX_ROWS;

/// The lookups below, named in errors as the queries of `sql/reconcile/` are.
const FILES_BY_ID: Query = Query { file: "(lookup of the settled files by operation_id)", sql: "" };
const FILES_BY_KEY: Query = Query { file: "(lookup of the settled files by idempotency_key)", sql: "" };
const PAYOUTS_LIKE: Query = Query { file: "(lookup of completed payouts equal to keyless ones)", sql: "" };
const TX_BY_ID: Query = Query { file: "(lookup of transactions by tx_id)", sql: "" };
const READ_STATE: Query = Query { file: "(the classification's rows)", sql: "" };

fn query_err(q: &'static Query) -> impl Fn(datafusion::error::DataFusionError) -> ReconcileError {
    move |e| ReconcileError::Query { query: q.file, source: Box::new(e) }
}

fn strings(values: impl IntoIterator<Item = String>) -> Result<RecordBatch, ReconcileError> {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, false)]));
    Ok(RecordBatch::try_new(schema, vec![Arc::new(StringArray::from_iter_values(values))])?)
}

async fn run_sql(
    ctx: &SessionContext,
    q: &'static Query,
    sql: &str,
    params: Vec<(&str, ScalarValue)>,
) -> Result<Vec<RecordBatch>, ReconcileError> {
    ctx.sql(sql)
        .await
        .and_then(|df| df.with_param_values(ParamValues::from(params)))
        .map_err(query_err(q))?
        .collect()
        .await
        .map_err(query_err(q))
}

/// The text column `name` of `b`, in any layout.
fn texts(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, ReconcileError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| ReconcileError::Arrow(arrow::error::ArrowError::SchemaError(format!("no column {name}"))))?;
    let c = arrow::compute::cast(c, &DataType::Utf8)?;
    let c = c.as_string::<i32>();
    Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect())
}

/// The settled rows' files that hold an operation of `ids` or a key of `keys`. Only the two columns are read,
/// and a file whose statistics put it outside the range sought is skipped.
async fn files_holding(
    state: &DeltaTable,
    ids: &BTreeSet<String>,
    keys: &BTreeSet<String>,
) -> Result<BTreeSet<String>, ReconcileError> {
    let ctx = stored::session_over(state, &CLASSIFICATION, true, None).await?;
    let mut files = BTreeSet::new();
    for (column, wanted, q) in [("operation_id", ids, &FILES_BY_ID), ("idempotency_key", keys, &FILES_BY_KEY)] {
        let (Some(lo), Some(hi)) = (wanted.first(), wanted.last()) else { continue };
        ctx.register_batch("wanted", strings(wanted.iter().cloned())?).map_err(query_err(q))?;
        let sql = format!(
            "SELECT DISTINCT t.{FILE_COLUMN} AS f FROM t JOIN wanted w ON t.{column} = w.v \
             WHERE t.settled = true AND t.{column} >= $lo AND t.{column} <= $hi"
        );
        let params = vec![("lo", ScalarValue::Utf8(Some(lo.clone()))), ("hi", ScalarValue::Utf8(Some(hi.clone())))];
        let batches = run_sql(&ctx, q, &sql, params).await?;
        ctx.deregister_table("wanted").map_err(query_err(q))?;
        for b in &batches {
            files.extend(texts(b, "f")?.into_iter().flatten().map(|f| stored::file_key(state, &f)));
        }
    }
    Ok(files)
}

/// Every row of the settled files `files`, decoded, each with where it is.
async fn rows_of_files(state: &DeltaTable, files: &BTreeSet<String>) -> Result<Vec<Held>, ReconcileError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = stored::session_over(state, &CLASSIFICATION, true, Some(files)).await?;
    let batches = run_sql(&ctx, &READ_STATE, "SELECT * FROM t", vec![]).await?;
    let mut out = Vec::new();
    for b in &batches {
        let paths = texts(b, FILE_COLUMN)?;
        for (row, path) in ClassificationRow::from_batch(b)?.into_iter().zip(paths) {
            let origin = Origin::File(stored::file_key(state, path.as_deref().unwrap_or_default()));
            out.push(held(row, origin)?);
        }
    }
    Ok(out)
}

/// A stored row decoded, or an error naming it.
fn held(row: ClassificationRow, origin: Origin) -> Result<Held, ReconcileError> {
    let subject = Subject::from_row(&row).map_err(|source| {
        let batch = ClassificationRow::to_batch(std::slice::from_ref(&row)).ok();
        ReconcileError::Undecodable {
            query: READ_STATE.file,
            row: batch.map(|b| row_name(&b, 0, 0, &["operation_id", "tx_ids"])).unwrap_or_default(),
            source,
        }
    })?;
    Ok(Held { row, subject, origin })
}

/// The completed logged payouts among the settled rows equal (agent, amount, reason) to one of `keyless`.
async fn settled_payouts_like(state: &DeltaTable, keyless: &[&Tx]) -> Result<Vec<CompletedPayout>, ReconcileError> {
    let sought: Vec<&Tx> = keyless.iter().copied().filter(|t| t.reference.is_some()).collect();
    if sought.is_empty() {
        return Ok(Vec::new());
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("agent_id", DataType::Utf8, false),
        Field::new("amount_usd", DataType::Decimal128(18, 2), false),
        Field::new("reason", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(sought.iter().map(|t| t.agent_id.clone()))),
            Arc::new(
                Decimal128Array::from_iter_values(sought.iter().map(|t| t.amount.to_decimal128()))
                    .with_precision_and_scale(18, 2)?,
            ),
            Arc::new(StringArray::from_iter_values(sought.iter().map(|t| t.reference.clone().unwrap_or_default()))),
        ],
    )?;
    let ctx = stored::session_over(state, &CLASSIFICATION, false, None).await?;
    ctx.register_batch("keyless", batch).map_err(query_err(&PAYOUTS_LIKE))?;
    let sql = "SELECT DISTINCT t.operation_id, t.agent_id, t.amount_usd, t.reason, t.log_tx_id FROM t \
               JOIN keyless k ON t.agent_id = k.agent_id AND t.amount_usd = k.amount_usd AND t.reason = k.reason \
               WHERE t.settled = true AND t.kind = 'payout' AND t.status = 'completed'";
    let batches = run_sql(&ctx, &PAYOUTS_LIKE, sql, vec![]).await?;
    decode(&PAYOUTS_LIKE, &batches, &["operation_id"], |r| {
        Ok(CompletedPayout {
            operation_id: r.text("operation_id")?,
            agent_id: r.text("agent_id")?,
            amount: r.usd("amount_usd")?,
            reason: r.text("reason")?,
            tx_id: r.opt_text("log_tx_id")?,
        })
    })
}

/// The transactions `ids` names, from the whole transactions table (only the id column is compared).
async fn transactions_by_id(txs: &DeltaTable, ids: &BTreeSet<String>) -> Result<HashMap<String, Tx>, ReconcileError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ctx = stored::session_over(txs, &TRANSACTIONS, false, None).await?;
    ctx.register_batch("wanted", strings(ids.iter().cloned())?).map_err(query_err(&TX_BY_ID))?;
    let batches = run_sql(&ctx, &TX_BY_ID, "SELECT t.* FROM t JOIN wanted w ON t.tx_id = w.v", vec![]).await?;
    Ok(TransactionRow::from_batches(&batches)?.iter().map(|r| (r.tx_id.clone(), Tx::from(r))).collect())
}

/// Bring the state up to the log and the transactions as they are now, from what changed. `Err(why)`
/// (inside `Ok`) when only a rebuild can.
pub async fn advance(
    wh: &Warehouse,
    commit: &CommitInfo,
    params: &Params,
) -> Result<Result<Built, String>, ReconcileError> {
    let Some(state) = open_existing(wh, &CLASSIFICATION).await? else {
        return Ok(Err("no classification yet".into()));
    };
    let Some(covers) = coverage::read(&state)
        .await
        .map_err(|e| ReconcileError::Read { table: CLASSIFICATION.name, source: Box::new(e) })?
    else {
        return Ok(Err("the classification records no coverage".into()));
    };
    let log = open_or_create(wh, &PAYOUT_LOG, commit).await?;
    let txs = open_existing(wh, &TRANSACTIONS).await?;
    let now = Versions { log: version_of(&log), transactions: txs.as_ref().map(version_of).unwrap_or(-1) };
    if now.log < covers.versions.log || now.transactions < covers.versions.transactions {
        return Ok(Err("the log or the transactions table is older than the classification covers".into()));
    }
    let log_added = match changes::appended(&log, &PAYOUT_LOG, covers.versions.log, now.log).await? {
        Ok(a) => a,
        Err(why) => return Ok(Err(why.0)),
    };
    let tx_added = match &txs {
        Some(t) => match changes::appended(t, &TRANSACTIONS, covers.versions.transactions, now.transactions).await? {
            Ok(a) => a,
            Err(why) => return Ok(Err(why.0)),
        },
        None => changes::Appended::default(),
    };
    if log_added.rows + tx_added.rows > MAX_ROWS {
        return Ok(Err(format!(
            "{} log events and {} transactions were appended since the last run, more than {MAX_ROWS} a run reads \
             incrementally",
            log_added.rows, tx_added.rows
        )));
    }
    let (Some(balances_table), Some(daily_table)) = (
        open_version(wh, &IMPLIED_BALANCES, covers.balances).await?,
        open_version(wh, &DAILY_TOTALS, covers.daily).await?,
    ) else {
        return Ok(Err("the totals at the versions the classification names cannot be read".into()));
    };

    let ctx = SessionContext::new();
    let events: Vec<LogEvent> = changes::read(&ctx, &log, &PAYOUT_LOG, &log_added.files).await?;
    let new_txs: Vec<Tx> = match &txs {
        Some(t) => changes::read::<TransactionRow>(&ctx, t, &TRANSACTIONS, &tx_added.files)
            .await?
            .iter()
            .map(Tx::from)
            .collect(),
        None => Vec::new(),
    };
    drop(ctx);

    // What the run reads back: the unsettled rows, and the files of settled rows the new data names.
    let unsettled_ctx = stored::session_over(&state, &CLASSIFICATION, false, None).await?;
    let unsettled: Vec<ClassificationRow> =
        stored::rows(&unsettled_ctx, "SELECT * FROM t WHERE settled = false", READ_STATE.file).await?;
    drop(unsettled_ctx);
    let ids: BTreeSet<String> = events.iter().map(|e| e.operation_id.clone()).collect();
    let keys: BTreeSet<String> =
        events.iter().map(|e| e.idempotency_key.clone()).chain(new_txs.iter().filter_map(|t| t.key.clone())).collect();
    let files = files_holding(&state, &ids, &keys).await?;
    let file_rows = stored::rows_in(&state, &files).await?;
    let held_rows = unsettled.len() as u64 + file_rows;
    if log_added.rows + tx_added.rows + held_rows > MAX_ROWS {
        return Ok(Err(format!(
            "{held_rows} stored rows to read back besides what was appended, more than {MAX_ROWS} a run holds"
        )));
    }
    let mut held_all = Vec::with_capacity(held_rows as usize);
    for row in unsettled {
        held_all.push(held(row, Origin::Unsettled)?);
    }
    held_all.extend(rows_of_files(&state, &files).await?);
    let keyless: Vec<&Tx> = new_txs.iter().filter(|t| is_keyless_payout(t)).collect();
    let settled_payouts = settled_payouts_like(&state, &keyless).await?;

    let mut merge = Merge::new(held_all);
    if let Err(why) = merge.apply_events(&events) {
        return Ok(Err(why.to_string()));
    }
    merge.claim_keys(&new_txs);
    let wanted = merge.tx_ids_wanted(&new_txs);
    let fetched = match &txs {
        Some(t) => transactions_by_id(t, &wanted).await?,
        None => HashMap::new(),
    };
    merge.match_tx_ids(&new_txs, &fetched);
    merge.pair_keyless(&new_txs, &settled_payouts);
    merge.classify(params.stale_before, &params.key_prefix);
    let classified = merge.operations();
    let outcome = merge.finish(now);

    // The totals, from the pinned versions plus what changed.
    let mut balances =
        totals::balances_of(&stored::all_rows::<ImpliedBalance>(&balances_table, &IMPLIED_BALANCES).await?);
    let mut daily = totals::daily_of(&stored::all_rows::<DailyTotal>(&daily_table, &DAILY_TOTALS).await?);
    totals::add_to_balances(&mut balances, &new_txs).map_err(ReconcileError::Total)?;
    totals::add_to_daily(&mut daily, &new_txs).map_err(ReconcileError::Total)?;
    totals::add_matched(&mut daily, &outcome.matched).map_err(ReconcileError::Total)?;
    let daily_rows = totals::daily_rows(&daily, &commit.run_id);
    let balances_version = if new_txs.is_empty() {
        covers.balances
    } else {
        let rows = totals::balance_rows(&balances, &commit.run_id);
        stored::overwrite(open_or_create(wh, &IMPLIED_BALANCES, commit).await?, &IMPLIED_BALANCES, &rows, commit)
            .await?
    };
    let daily_version = if new_txs.is_empty() && outcome.matched.is_empty() {
        covers.daily
    } else {
        stored::overwrite(open_or_create(wh, &DAILY_TOTALS, commit).await?, &DAILY_TOTALS, &daily_rows, commit).await?
    };
    hooks::reached(CrashPoint::ReconcileAfterTotals).await;

    let next = Coverage { versions: now, balances: balances_version, daily: daily_version };
    let mut removes = Vec::new();
    let mut writer = stored::writer(&state)?;
    if outcome.unsettled_changed {
        removes.extend(stored::removes(&state, Files::Unsettled).await?);
        stored::write_rows(&mut writer, &outcome.unsettled).await?;
    }
    if !outcome.rewritten_files.is_empty() {
        removes.extend(stored::removes(&state, Files::Paths(&outcome.rewritten_files)).await?);
    }
    stored::write_rows(&mut writer, &outcome.settled).await?;
    let adds = stored::flush(&mut writer).await?;
    if !removes.is_empty() || !adds.is_empty() || next != covers {
        stored::commit(&state, commit, removes, adds, &next, false).await?;
    }
    hooks::reached(CrashPoint::ReconcileAfterState).await;
    Ok(Ok(Built { daily: daily_rows, classified, rebuilt: None }))
}
