//! The payout log (`purpleflea.payouts.log`) and the rejects table: appending events, reading an
//! operation's history back.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;

use super::PayoutError;
use super::state::{Event, Logged};
use super::validate::Reject;
use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::tables::{CommitInfo, PAYOUT_LOG, REJECTS};

/// One row of the payout log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub operation_id: String,
    pub kind: &'static str,
    pub event: Event,
    pub attempt: i32,
    pub agent_id: Option<String>,
    pub counterparty: Option<String>,
    pub amount: Option<Usd>,
    pub reason: Option<String>,
    pub idempotency_key: String,
    pub tx_id: Option<String>,
    pub escrow_id: Option<String>,
    pub http_status: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub run_id: String,
    pub recorded_at: DateTime<Utc>,
}

fn text<'a>(rows: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(rows.collect::<StringArray>())
}

fn events_batch(events: &[LogEvent]) -> Result<RecordBatch, PayoutError> {
    let e = events;
    let columns: Vec<ArrayRef> = vec![
        text(e.iter().map(|x| Some(x.operation_id.as_str()))),
        text(e.iter().map(|x| Some(x.kind))),
        text(e.iter().map(|x| Some(x.event.as_str()))),
        Arc::new(e.iter().map(|x| Some(x.attempt)).collect::<Int32Array>()),
        text(e.iter().map(|x| x.agent_id.as_deref())),
        text(e.iter().map(|x| x.counterparty.as_deref())),
        Arc::new(
            e.iter()
                .map(|x| x.amount.map(Usd::to_decimal128))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)?,
        ),
        text(e.iter().map(|x| x.reason.as_deref())),
        text(e.iter().map(|x| Some(x.idempotency_key.as_str()))),
        text(e.iter().map(|x| x.tx_id.as_deref())),
        text(e.iter().map(|x| x.escrow_id.as_deref())),
        Arc::new(e.iter().map(|x| x.http_status).collect::<Int32Array>()),
        text(e.iter().map(|x| x.error_code.as_deref())),
        text(e.iter().map(|x| x.error_message.as_deref())),
        text(e.iter().map(|x| Some(x.run_id.as_str()))),
        Arc::new(
            e.iter()
                .map(|x| Some(x.recorded_at.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(e.iter().map(|x| Some(x.recorded_at.timestamp().div_euclid(86_400) as i32)).collect::<Date32Array>()),
    ];
    Ok(RecordBatch::try_new(PAYOUT_LOG.arrow_schema(), columns)?)
}

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

/// Append events as one commit (plain appends never conflict, so overlapping runs both land).
pub async fn append_events(
    table: DeltaTable,
    events: &[LogEvent],
    commit: &CommitInfo,
) -> Result<DeltaTable, PayoutError> {
    if events.is_empty() {
        return Ok(table);
    }
    append(table, events_batch(events)?, commit, PAYOUT_LOG.name).await
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
    let r = rejects;
    let columns: Vec<ArrayRef> = vec![
        text(r.iter().map(|x| x.operation_id.as_deref())),
        text(r.iter().map(|x| Some(x.kind))),
        text(r.iter().map(|x| Some(x.code.as_str()))),
        text(r.iter().map(|x| Some(x.message.as_str()))),
        text(r.iter().map(|x| Some(x.source_row.as_str()))),
        text(r.iter().map(|_| Some(commit.run_id.as_str()))),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(at.timestamp_micros()); r.len()]).with_timezone("UTC")),
    ];
    append(table, RecordBatch::try_new(REJECTS.arrow_schema(), columns)?, commit, REJECTS.name).await
}

fn strings(b: &RecordBatch, name: &str) -> Result<StringArray, PayoutError> {
    let col = b.column_by_name(name).ok_or_else(|| PayoutError::Source(format!("log has no column {name}")))?;
    let cast = arrow::compute::cast(col, &DataType::Utf8)?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new())))
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

/// Every logged event of the given operations, grouped by operation id.
pub async fn history(table: &DeltaTable, ids: &[String]) -> Result<HashMap<String, Vec<Logged>>, PayoutError> {
    let mut out: HashMap<String, Vec<Logged>> = HashMap::new();
    if ids.is_empty()
        || table.version().is_none()
        || table.get_file_uris().map_err(|e| PayoutError::write(PAYOUT_LOG.name, e))?.next().is_none()
    {
        return Ok(out);
    }
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(|e| PayoutError::write(PAYOUT_LOG.name, e))?;
    let provider = table.table_provider().await.map_err(|e| PayoutError::Query(e.to_string()))?;
    ctx.register_table("log", provider).map_err(|e| PayoutError::Query(e.to_string()))?;
    let id_batch =
        RecordBatch::try_from_iter(vec![("id", Arc::new(StringArray::from_iter_values(ids.iter())) as ArrayRef)])?;
    ctx.register_batch("ids", id_batch).map_err(|e| PayoutError::Query(e.to_string()))?;
    let sql = "SELECT l.operation_id, l.kind, l.event, l.attempt, l.agent_id, l.counterparty_agent_id, \
               CAST(l.amount_usd AS VARCHAR) AS amount, l.reason, l.tx_id, l.escrow_id, l.error_code \
               FROM log l JOIN ids i ON l.operation_id = i.id";
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| PayoutError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| PayoutError::Query(e.to_string()))?;
    for b in &batches {
        let (op, kind, event) = (strings(b, "operation_id")?, strings(b, "kind")?, strings(b, "event")?);
        let attempt = arrow::compute::cast(b.column(3), &DataType::Int32)?;
        let attempt = attempt
            .as_any()
            .downcast_ref::<Int32Array>()
            .cloned()
            .unwrap_or_else(|| Int32Array::from(Vec::<i32>::new()));
        let (agent, cp, amount, reason) = (
            strings(b, "agent_id")?,
            strings(b, "counterparty_agent_id")?,
            strings(b, "amount")?,
            strings(b, "reason")?,
        );
        let (tx, esc, code) = (strings(b, "tx_id")?, strings(b, "escrow_id")?, strings(b, "error_code")?);
        for i in 0..b.num_rows() {
            let Some(ev) = Event::parse(event.value(i)) else { continue };
            out.entry(op.value(i).to_string()).or_default().push(Logged {
                event: ev,
                attempt: if attempt.is_null(i) { 0 } else { attempt.value(i) },
                kind: kind.value(i).to_string(),
                agent_id: opt(&agent, i),
                counterparty: opt(&cp, i),
                amount: opt(&amount, i).and_then(|a| Usd::parse(&a).ok()),
                reason: opt(&reason, i),
                tx_id: opt(&tx, i),
                escrow_id: opt(&esc, i),
                error_code: opt(&code, i),
            });
        }
    }
    Ok(out)
}
