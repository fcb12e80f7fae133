//! The payout log (`purpleflea.payouts.log`) and the rejects table: appending events, reading an
//! operation's history back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};

use super::PayoutError;
pub use super::event::{Event, LogEvent};
use super::validate::{Reject, RejectCode, RowKind};
use crate::tables::row::{Row, table_row};
use crate::tables::{CommitInfo, PAYOUT_LOG, REJECTS};

async fn append(
    table: DeltaTable,
    batch: RecordBatch,
    commit: &CommitInfo,
    name: &'static str,
) -> Result<DeltaTable, PayoutError> {
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| PayoutError::write(name, e))
}

/// The Delta application id whose version every intent commit of a namespace advances. Two commits that
/// carry it conflict when neither saw the other (delta-rs's `ConcurrentTransaction` check), so of two
/// runs that read the log at the same time only one commits its intents; the other re-reads.
pub fn intents_app_id(namespace: &str) -> String {
    format!("pfsync.payouts.{namespace}")
}

/// The application transaction of commits that carry a payer's intents or outcomes (see `executor.rs`).
pub fn payer_app_id(payer: &str) -> String {
    format!("pfsync.payer.{payer}")
}

/// The version an intent commit sets: past the table's last, and the commit's time in milliseconds when
/// that is larger (so the version also tells an auditor when intents were last committed).
pub async fn next_intents_version(table: &DeltaTable, app_id: &str, now: DateTime<Utc>) -> Result<i64, PayoutError> {
    let last = match table.snapshot() {
        Ok(s) => s
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| PayoutError::write(PAYOUT_LOG.name, e))?,
        // A table with no commit yet has no snapshot and no version.
        Err(_) => None,
    };
    Ok(last.map_or(0, |v| v.saturating_add(1)).max(now.timestamp_millis()))
}

/// How an intent commit ended.
pub enum IntentCommit {
    Committed(DeltaTable),
    /// Another run committed intents after this one read the log: re-read and decide again.
    Conflict,
}

/// Append events with the namespace's application transaction (see [`intents_app_id`]) and those of the
/// change feeds whose operations the intents are (see `feed`).
pub async fn append_intents(
    table: DeltaTable,
    events: &[LogEvent],
    commit: &CommitInfo,
    txns: Vec<Transaction>,
) -> Result<IntentCommit, PayoutError> {
    let result = table
        .write(vec![LogEvent::to_batch(events)?])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit.properties().with_application_transactions(txns))
        .await;
    match result {
        Ok(t) => Ok(IntentCommit::Committed(t)),
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        }) => Ok(IntentCommit::Conflict),
        Err(e) => Err(PayoutError::write(PAYOUT_LOG.name, e)),
    }
}

/// Append events as one commit (plain appends never conflict, so overlapping runs both land).
pub async fn append_events(
    table: DeltaTable,
    events: &[LogEvent],
    commit: &CommitInfo,
) -> Result<DeltaTable, PayoutError> {
    if events.is_empty() {
        return Ok(table);
    }
    append(table, LogEvent::to_batch(events)?, commit, PAYOUT_LOG.name).await
}

table_row! {
    /// One row of the rejects table: a source row refused before any money moved.
    pub struct RejectRow: REJECTS, key(operation_id, code) {
        pub operation_id: Option<String>,
        pub kind: RowKind,
        pub code: RejectCode,
        pub message: String,
        pub source_row: Option<String>,
        pub run_id: String,
        pub rejected_at: DateTime<Utc>,
    }
}

impl RejectRow {
    pub fn new(r: &Reject, run_id: &str, at: DateTime<Utc>) -> RejectRow {
        RejectRow {
            operation_id: r.operation_id.clone(),
            kind: r.kind,
            code: r.code,
            message: r.message.clone(),
            source_row: Some(r.source_row.clone()),
            run_id: run_id.to_string(),
            rejected_at: at,
        }
    }
}

/// What makes two refusals one: a refused row is recorded once per version of it. A version is the row's
/// id, kind and code with its values as the rejects table keeps them (`source_row`: every column, where a
/// clipped value ends with a digest of the whole). A row left as it is counts as refused before in later
/// runs; an edited row is a new version, validated again (paid if it is valid now, recorded anew if not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RejectVersion {
    operation_id: Option<String>,
    kind: &'static str,
    code: &'static str,
    source_row: String,
}

impl RejectVersion {
    pub fn of(r: &Reject) -> RejectVersion {
        RejectVersion {
            operation_id: r.operation_id.clone(),
            kind: r.kind.as_str(),
            code: r.code.as_str(),
            source_row: r.source_row.clone(),
        }
    }

    fn of_row(r: &RejectRow) -> RejectVersion {
        RejectVersion {
            operation_id: r.operation_id.clone(),
            kind: r.kind.as_str(),
            code: r.code.as_str(),
            source_row: r.source_row.clone().unwrap_or_default(),
        }
    }
}

/// Of `rejects`, the versions the rejects table holds already (recorded by an earlier run).
pub async fn recorded_rejects(table: &DeltaTable, rejects: &[Reject]) -> Result<HashSet<RejectVersion>, PayoutError> {
    let mut out = HashSet::new();
    if rejects.is_empty()
        || table.version().is_none()
        || table.get_file_uris().map_err(|e| PayoutError::write(REJECTS.name, e))?.next().is_none()
    {
        return Ok(out);
    }
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(|e| PayoutError::write(REJECTS.name, e))?;
    let provider = table.table_provider().await.map_err(PayoutError::query("opening the rejects table"))?;
    ctx.register_table("rejects", provider).map_err(PayoutError::query("registering the rejects table"))?;
    let ids: HashSet<&str> = rejects.iter().filter_map(|r| r.operation_id.as_deref()).collect();
    let id_batch =
        RecordBatch::try_from_iter(vec![("id", Arc::new(StringArray::from_iter_values(ids.into_iter())) as ArrayRef)])?;
    ctx.register_batch("ids", id_batch).map_err(PayoutError::query("registering the refused ids"))?;
    let mut sql = "SELECT r.* FROM rejects r JOIN ids i ON r.operation_id = i.id".to_string();
    if rejects.iter().any(|r| r.operation_id.is_none()) {
        sql.push_str(" UNION ALL SELECT * FROM rejects WHERE operation_id IS NULL");
    }
    let wanted: HashSet<RejectVersion> = rejects.iter().map(RejectVersion::of).collect();
    let what = "reading the rejects table";
    for row in RejectRow::from_batches(&collect(&ctx, &sql, what).await?)? {
        let v = RejectVersion::of_row(&row);
        if wanted.contains(&v) {
            out.insert(v);
        }
    }
    Ok(out)
}

pub async fn append_rejects(
    table: DeltaTable,
    rejects: &[Reject],
    commit: &CommitInfo,
    at: DateTime<Utc>,
) -> Result<DeltaTable, PayoutError> {
    if rejects.is_empty() {
        return Ok(table);
    }
    let rows: Vec<RejectRow> = rejects.iter().map(|r| RejectRow::new(r, &commit.run_id, at)).collect();
    append(table, RejectRow::to_batch(&rows)?, commit, REJECTS.name).await
}

/// A text column by name, as plain `Utf8` (DataFusion may hand out views or large strings).
pub(super) fn strings(b: &RecordBatch, name: &str) -> Result<StringArray, PayoutError> {
    let col = b.column_by_name(name).ok_or_else(|| PayoutError::LogRow(format!("the log has no column {name}")))?;
    let cast = arrow::compute::cast(col, &DataType::Utf8)?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| PayoutError::LogRow(format!("log column {name} is not text")))
}

/// A session over the log as `log`, or `None` when the table has no data yet.
pub(super) async fn log_session(table: &DeltaTable) -> Result<Option<SessionContext>, PayoutError> {
    if table.version().is_none()
        || table.get_file_uris().map_err(|e| PayoutError::write(PAYOUT_LOG.name, e))?.next().is_none()
    {
        return Ok(None);
    }
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(|e| PayoutError::write(PAYOUT_LOG.name, e))?;
    let provider = table.table_provider().await.map_err(PayoutError::query("opening the payout log"))?;
    ctx.register_table("log", provider).map_err(PayoutError::query("registering the payout log"))?;
    Ok(Some(ctx))
}

/// The batches of `sql` over the log as `log`.
pub(super) async fn collect(
    ctx: &SessionContext,
    sql: &str,
    what: &'static str,
) -> Result<Vec<RecordBatch>, PayoutError> {
    ctx.sql(sql).await.map_err(PayoutError::query(what))?.collect().await.map_err(PayoutError::query(what))
}

/// The distinct `columns` of the log's rows that match `filter`.
async fn distinct_where(
    ctx: &SessionContext,
    filter: datafusion::prelude::Expr,
    columns: &[&str],
    what: &'static str,
) -> Result<Vec<RecordBatch>, PayoutError> {
    let df = ctx.table("log").await.map_err(PayoutError::query(what))?;
    let df = df.filter(filter).map_err(PayoutError::query(what))?;
    let df = df.select_columns(columns).map_err(PayoutError::query(what))?;
    df.distinct().map_err(PayoutError::query(what))?.collect().await.map_err(PayoutError::query(what))
}

/// Every provider reference the log has recorded for a completed operation (`tx_id`). At a provider
/// without key memory, a ledger entry is an unknown operation's outcome only if no other operation
/// claimed it.
pub async fn claimed_tx_ids(table: &DeltaTable) -> Result<HashSet<String>, PayoutError> {
    let Some(ctx) = log_session(table).await? else { return Ok(HashSet::new()) };
    let what = "reading the payout log's transaction ids";
    let batches =
        collect(&ctx, "SELECT DISTINCT tx_id FROM log WHERE event = 'completed' AND tx_id IS NOT NULL", what).await?;
    let mut out = HashSet::new();
    for b in &batches {
        let ids = strings(b, "tx_id")?;
        out.extend((0..b.num_rows()).filter(|i| !ids.is_null(*i)).map(|i| ids.value(i).to_string()));
    }
    Ok(out)
}

/// An intent with no outcome yet, as the lease reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    pub operation_id: String,
    pub attempt: i32,
    /// The payer it debits; `None` for a row logged before the payer was recorded (it may be anyone's).
    pub payer: Option<String>,
}

/// The intents recorded after `since` for these payers (or with no payer recorded: rows from before
/// payers were) whose operation has no outcome yet, in any namespace and of any run: the lease. The
/// caller tells its own intents from another process's.
pub async fn open_intents(
    table: &DeltaTable,
    payers: &[String],
    since: DateTime<Utc>,
) -> Result<Vec<OpenIntent>, PayoutError> {
    use datafusion::prelude::{col, lit};
    let Some(ctx) = log_session(table).await? else { return Ok(Vec::new()) };
    let what = "reading the payout log's open intents";
    let since =
        datafusion::scalar::ScalarValue::TimestampMicrosecond(Some(since.timestamp_micros()), Some("UTC".into()));
    let of_payers = col("payer_agent_id")
        .is_null()
        .or(col("payer_agent_id").in_list(payers.iter().map(|p| lit(p.clone())).collect(), false));
    let intents = col("event").eq(lit("intent")).and(col("recorded_at").gt(lit(since))).and(of_payers);
    let batches = distinct_where(&ctx, intents, &["operation_id"], what).await?;
    let mut ids = Vec::new();
    for b in &batches {
        let a = strings(b, "operation_id")?;
        ids.extend((0..b.num_rows()).map(|i| a.value(i).to_string()));
    }
    let mut open = Vec::new();
    for (id, events) in history(table, &ids).await? {
        let super::state::Status::InFlight { attempt } = super::state::status(&events) else { continue };
        let payer = events
            .iter()
            .filter(|e| e.event == Event::Intent && e.attempt == attempt)
            .find_map(|e| e.payer_agent_id.clone());
        open.push(OpenIntent { operation_id: id, attempt, payer });
    }
    open.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
    Ok(open)
}

/// For each of these provider transactions, the operations whose `completed` claims it.
pub async fn claims_of(table: &DeltaTable, tx_ids: &[String]) -> Result<HashMap<String, Vec<String>>, PayoutError> {
    use datafusion::prelude::{col, lit};
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if tx_ids.is_empty() {
        return Ok(out);
    }
    let Some(ctx) = log_session(table).await? else { return Ok(out) };
    let what = "reading who claims these provider transactions";
    let claiming = col("event")
        .eq(lit("completed"))
        .and(col("tx_id").in_list(tx_ids.iter().map(|t| lit(t.clone())).collect(), false));
    for b in &distinct_where(&ctx, claiming, &["tx_id", "operation_id"], what).await? {
        let (t, o) = (strings(b, "tx_id")?, strings(b, "operation_id")?);
        for i in 0..b.num_rows() {
            out.entry(t.value(i).to_string()).or_default().push(o.value(i).to_string());
        }
    }
    Ok(out)
}

/// Every logged event of the given operations, grouped by operation id. Values are decoded with their
/// declared types; a row that cannot be (an event or kind this version does not know, an amount that is
/// not whole cents) is an error naming it, never skipped: a skipped intent could mean a second payment.
pub async fn history(table: &DeltaTable, ids: &[String]) -> Result<HashMap<String, Vec<LogEvent>>, PayoutError> {
    let mut out: HashMap<String, Vec<LogEvent>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let Some(ctx) = log_session(table).await? else { return Ok(out) };
    let id_batch =
        RecordBatch::try_from_iter(vec![("id", Arc::new(StringArray::from_iter_values(ids.iter())) as ArrayRef)])?;
    ctx.register_batch("ids", id_batch).map_err(PayoutError::query("registering the operation ids"))?;
    let what = "reading the payout log history";
    let batches = collect(&ctx, "SELECT l.* FROM log l JOIN ids i ON l.operation_id = i.id", what).await?;
    for e in LogEvent::from_batches(&batches)? {
        out.entry(e.operation_id.clone()).or_default().push(e);
    }
    Ok(out)
}

/// The stored position of a change feed: the last version of its table it consumed.
pub async fn feed_position(table: &DeltaTable, app_id: &str) -> Result<Option<i64>, PayoutError> {
    match table.snapshot() {
        Ok(s) => s
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| PayoutError::write(PAYOUT_LOG.name, e)),
        Err(_) => Ok(None),
    }
}

/// What the log holds for the feed `key`: its table binding and position, and, while it has neither, a
/// position stored before namespaces and tables were part of it (see `feed`).
pub async fn feed_stored(table: &DeltaTable, key: &super::feed::FeedKey) -> Result<super::feed::Stored, PayoutError> {
    use super::feed::{Legacy, Stored, legacy};
    let bound = feed_position(table, &key.table_app_id()).await?;
    let consumed = feed_position(table, &key.app_id()).await?;
    let from = feed_position(table, &key.from_app_id()).await?;
    if bound.is_some() || consumed.is_some() || from.is_some() {
        return Ok(Stored { bound, consumed, from, legacy: None });
    }
    let old_consumed = feed_position(table, &legacy::app_id(&key.name)).await?;
    let old_from = feed_position(table, &legacy::from_app_id(&key.name)).await?;
    if old_consumed.is_none() && old_from.is_none() {
        return Ok(Stored::default());
    }
    let claimed_by = feed_position(table, &legacy::claim_app_id(&key.name)).await?;
    let other_namespaces = claimed_by.is_none() && intents_of_other_namespaces(table, &key.namespace).await?;
    let legacy = Legacy { consumed: old_consumed, from: old_from, claimed_by, other_namespaces };
    Ok(Stored { legacy: Some(legacy), ..Stored::default() })
}

/// Whether the log holds an intent whose idempotency key is not of `namespace`.
async fn intents_of_other_namespaces(table: &DeltaTable, namespace: &str) -> Result<bool, PayoutError> {
    use datafusion::prelude::{col, lit, not};
    let Some(ctx) = log_session(table).await? else { return Ok(false) };
    let what = "reading the payout log's namespaces";
    let prefix = format!("pfsync:{namespace}:");
    let batches = ctx
        .table("log")
        .await
        .map_err(PayoutError::query(what))?
        .filter(
            col("event")
                .eq(lit("intent"))
                .and(not(datafusion::functions::expr_fn::starts_with(col("idempotency_key"), lit(prefix)))),
        )
        .map_err(PayoutError::query(what))?
        .limit(0, Some(1))
        .map_err(PayoutError::query(what))?
        .collect()
        .await
        .map_err(PayoutError::query(what))?;
    Ok(batches.iter().any(|b| b.num_rows() > 0))
}

/// Write a position stored without namespace or table under the feed's own ids, with the claim that keeps
/// any other feed from taking it over too: one commit of no rows. False when another run committed a claim
/// or position meanwhile (read the log again and decide again).
pub async fn adopt_feed_position(
    table: DeltaTable,
    commit: &CommitInfo,
    key: &super::feed::FeedKey,
    consumed: Option<i64>,
    from: i64,
) -> Result<bool, PayoutError> {
    let now = Utc::now().timestamp_millis();
    let fingerprint = key.fingerprint();
    let mut txns = vec![
        Transaction::new_with_last_update(key.table_app_id(), fingerprint, Some(now)),
        Transaction::new_with_last_update(key.from_app_id(), from, Some(now)),
        Transaction::new_with_last_update(super::feed::legacy::claim_app_id(&key.name), fingerprint, Some(now)),
    ];
    if let Some(c) = consumed {
        txns.push(Transaction::new_with_last_update(key.app_id(), c, Some(now)));
    }
    let result = table
        .write(vec![LogEvent::to_batch(&[])?])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit.properties().with_application_transactions(txns))
        .await;
    match result {
        Ok(_) => {
            tracing::info!(feed = %key.name, namespace = %key.namespace, version = from, "feed position stored without namespace or table taken over");
            Ok(true)
        }
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        }) => Ok(false),
        Err(e) => Err(PayoutError::write(PAYOUT_LOG.name, e)),
    }
}

/// Move a feed's next read past the version it read, when every operation it yielded is final in the log
/// (completed or rejected; rows refused by validation are in the rejects table). A commit of no rows that
/// carries the feed's application transactions. The intent commits carried the consumed version already;
/// this one only says nothing before it needs reading again.
pub async fn store_feed_position(
    wh: &crate::tables::Warehouse,
    commit: &CommitInfo,
    feed: &super::feed::FeedRead,
) -> Result<(), PayoutError> {
    let Some(end) = feed.end_version else { return Ok(()) };
    let Some(table) = crate::tables::open_existing(wh, &PAYOUT_LOG).await? else { return Ok(()) };
    let events = history(&table, &feed.op_ids).await?;
    let open = feed.op_ids.iter().filter(|id| {
        !matches!(
            events.get(*id).map(|e| super::state::status(e)),
            Some(super::state::Status::Completed { .. } | super::state::Status::Rejected { .. })
        )
    });
    let open = open.count();
    if open > 0 {
        tracing::info!(feed = %feed.app_id, open, "feed start kept: operations not final yet are read again next run");
        return Ok(());
    }
    if feed_position(&table, &feed.from_app_id).await?.is_some_and(|v| v > end) {
        return Ok(());
    }
    let txns = feed.final_txns(Utc::now().timestamp_millis());
    let result = table
        .write(vec![LogEvent::to_batch(&[])?])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit.properties().with_application_transactions(txns))
        .await;
    match result {
        Ok(_) => tracing::info!(feed = %feed.app_id, version = end, "feed moved on"),
        // Another run moved the same feed meanwhile: the next run reads from the older start, and its ids
        // make that re-read pay nothing twice.
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        }) => tracing::info!(feed = %feed.app_id, "another run moved the feed meanwhile; left as it is"),
        Err(e) => return Err(PayoutError::write(PAYOUT_LOG.name, e)),
    }
    Ok(())
}
