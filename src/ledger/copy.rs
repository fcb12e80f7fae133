//! Each held agent's ledger into `purpleflea.ledger.entries`, append-only and deduplicated by entry id. The
//! provider answers only an agent's newest entries (its window), so a copy finds what it can no longer
//! read: the gaps (`chain.rs`) go to `purpleflea.ledger.gaps` first (reconcile reports each as
//! `ledger_gap`), then the entries, in one commit that carries the copy's app transaction so two copies at
//! once cannot both append.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use super::chain::{Gap, Stored, plan};
use super::history::origin_app_id;
use super::rows::{EntryType, LedgerEntryRow, LedgerGapRow};
use super::{LedgerCopy, LedgerError};
use crate::check;
use crate::micros::{MICROS_SCALE, Micros};
use crate::provider::{HeldAgents, LedgerEntry};
use crate::tables::row::{Row, Text};
use crate::tables::{CommitInfo, LEDGER_ENTRIES, LEDGER_GAPS, Warehouse, open_or_create, position};

const MAX_CONFLICT_RETRIES: u32 = 5;

fn query_err(e: datafusion::error::DataFusionError) -> LedgerError {
    LedgerError::write(LEDGER_ENTRIES.name, e.into())
}

fn bad(what: &str) -> LedgerError {
    LedgerError::Row { table: LEDGER_ENTRIES.name, detail: what.to_string() }
}

async fn query(table: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>, LedgerError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(|e| LedgerError::write(LEDGER_ENTRIES.name, e))?;
    ctx.register_table("target", table.table_provider().await.map_err(query_err)?).map_err(query_err)?;
    ctx.sql(sql).await.map_err(query_err)?.collect().await.map_err(query_err)
}

fn text_column(b: &RecordBatch, i: usize) -> Result<Vec<String>, LedgerError> {
    let c = arrow::compute::cast(b.column(i), &DataType::Utf8)?;
    let s = c.as_string_opt::<i32>().ok_or_else(|| bad("not text"))?;
    Ok((0..s.len()).map(|r| s.value(r).to_string()).collect())
}

/// The newest stored entry of each agent (highest `ledger_seq`).
async fn stored_newest(table: &DeltaTable) -> Result<HashMap<String, Stored>, LedgerError> {
    let sql = "SELECT agent_id, entry_id, balance_after_usd, ledger_seq FROM (SELECT agent_id, entry_id, \
               balance_after_usd, ledger_seq, row_number() OVER (PARTITION BY agent_id ORDER BY ledger_seq DESC) \
               AS rn FROM target) WHERE rn = 1";
    let mut out = HashMap::new();
    for b in query(table, sql).await? {
        let (agents, ids) = (text_column(&b, 0)?, text_column(&b, 1)?);
        let balances = b.column(2).as_primitive_opt::<Decimal128Type>().ok_or_else(|| bad("balance type"))?;
        let seqs = b.column(3).as_primitive_opt::<Int64Type>().ok_or_else(|| bad("ledger_seq type"))?;
        for r in 0..b.num_rows() {
            let balance_after =
                Micros::from_decimal128(balances.value(r), MICROS_SCALE).map_err(|e| bad(&e.to_string()))?;
            out.insert(agents[r].clone(), Stored { entry_id: ids[r].clone(), balance_after, seq: seqs.value(r) });
        }
    }
    Ok(out)
}

/// Entry ids the table holds from `since` on (partition-pruned by `created_date`).
async fn stored_ids(table: &DeltaTable, since: DateTime<Utc>) -> Result<HashSet<String>, LedgerError> {
    let sql = format!("SELECT entry_id FROM target WHERE created_date >= DATE '{}'", since.format("%Y-%m-%d"));
    let mut out = HashSet::new();
    for b in query(table, &sql).await? {
        out.extend(text_column(&b, 0)?);
    }
    Ok(out)
}

fn when(secs: i64) -> Result<DateTime<Utc>, LedgerError> {
    Utc.timestamp_opt(secs, 0).single().ok_or_else(|| bad(&format!("createdAt {secs} is not a time")))
}

/// Read every held agent's window (each entry checked), then append what is new.
pub async fn copy_ledgers(
    held: &dyn HeldAgents,
    wh: &Warehouse,
    commit: &CommitInfo,
) -> Result<LedgerCopy, LedgerError> {
    let started = Instant::now();
    let mut report = LedgerCopy::default();
    let limit = held.ledger_window();
    let mut windows: Vec<Window> = Vec::new();
    for agent in held.agent_ids() {
        let entries = held.ledger(&agent).await?;
        report.windows += 1;
        report.entries_read += entries.len() as u64;
        let read = entries.len();
        let mut ok = Vec::with_capacity(read);
        for e in entries {
            let checked = check::id("entry_id", &e.id)
                .and_then(|()| (e.agent_id == agent).then_some(()).ok_or("another agent's entry".into()))
                .and_then(|()| check::short_text("type", Some(&e.kind)))
                .and_then(|()| check::text("reason", Some(&e.reason)))
                .and_then(|()| check::short_text("reference", e.reference.as_deref()));
            match checked {
                Ok(()) => ok.push(e),
                Err(reason) => {
                    report.failed += 1;
                    tracing::warn!(agent = %agent, entry = %e.id, %reason, "ledger entry skipped");
                }
            }
        }
        // Less than a full window, every entry of it taken: the agent's whole ledger.
        let whole = read < limit && ok.len() == read;
        windows.push(Window { agent, entries: ok, whole });
    }
    let mut attempt = 1;
    loop {
        match append(&windows, limit, wh, commit, &mut report).await {
            Err(e) if e.is_conflict() && attempt < MAX_CONFLICT_RETRIES => {
                tracing::warn!(table = LEDGER_ENTRIES.name, attempt, "another copy appended first; planning again");
                report.inserted = 0;
                report.known = 0;
                report.gaps = 0;
                attempt += 1;
            }
            other => {
                other?;
                report.elapsed = started.elapsed();
                return Ok(report);
            }
        }
    }
}

/// One agent's window as read, its entries checked.
struct Window {
    agent: String,
    entries: Vec<LedgerEntry>,
    /// The read answered less than a full window and every entry passed its checks: the whole ledger.
    whole: bool,
}

async fn append(
    windows: &[Window],
    limit: usize,
    wh: &Warehouse,
    commit: &CommitInfo,
    report: &mut LedgerCopy,
) -> Result<(), LedgerError> {
    let synced_at = Utc::now();
    let table = open_or_create(wh, &LEDGER_ENTRIES, commit).await?;
    let has_rows = table.version().is_some_and(|v| v > 0);
    let newest = if has_rows { stored_newest(&table).await? } else { HashMap::new() };
    let oldest = windows.iter().flat_map(|w| w.entries.iter().map(|e| e.created_at)).min();
    let known = match oldest {
        Some(secs) if has_rows => stored_ids(&table, when(secs)?).await?,
        _ => HashSet::new(),
    };
    let mut fresh: Vec<(LedgerEntry, i64)> = Vec::new();
    let mut gaps: Vec<(String, Gap)> = Vec::new();
    // Agents copied from their first entry on, for the evidence (`history::CopiedTail::from_origin`).
    let mut origins: Vec<&str> = Vec::new();
    for Window { agent, entries: window, whole } in windows {
        let p = plan(window, limit, newest.get(agent), &known);
        let starts_at_zero =
            p.new.first().is_some_and(|(e, seq)| *seq == 1 && e.balance_before() == Some(Micros::ZERO));
        if *whole && !newest.contains_key(agent) && p.gaps.is_empty() && starts_at_zero {
            origins.push(agent);
        }
        report.known += p.known;
        for g in &p.gaps {
            tracing::warn!(agent = %agent, kind = g.kind.as_str(), detail = %g.detail, "ledger gap");
        }
        if !p.gaps.is_empty() {
            gaps.extend(p.gaps.into_iter().map(|g| (agent.clone(), g)));
        } else if !newest.contains_key(agent) && window.len() >= limit {
            tracing::info!(agent = %agent, "first sync of a full ledger window: older entries are not synced");
        }
        fresh.extend(p.new);
    }
    if !gaps.is_empty() {
        // Before the entries: if their commit fails, the next sync finds the same gap again (recorded twice,
        // one finding); the other way round a failed gap commit would lose the gap for good.
        let t = open_or_create(wh, &LEDGER_GAPS, commit).await?;
        t.write(vec![gaps_batch(&gaps, commit, synced_at)?])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| LedgerError::write(LEDGER_GAPS.name, e))?;
    }
    report.gaps = gaps.len() as u64;
    if fresh.is_empty() {
        report.version = table.version();
        return Ok(());
    }
    let n = fresh.len() as u64;
    let table = table
        .write(vec![entries_batch(&fresh, synced_at)?])
        .with_save_mode(SaveMode::Append)
        // The app transaction makes two syncs that append at once conflict: one wins, the other plans again.
        .with_commit_properties(
            origins.iter().fold(position::commit_properties(commit, &LEDGER_ENTRIES, synced_at), |props, agent| {
                props.with_application_transaction(Transaction::new(origin_app_id(agent), 1))
            }),
        )
        .await
        .map_err(|e| LedgerError::write(LEDGER_ENTRIES.name, e))?;
    report.inserted = n;
    report.version = table.version();
    Ok(())
}

fn entries_batch(rows: &[(LedgerEntry, i64)], synced_at: DateTime<Utc>) -> Result<RecordBatch, LedgerError> {
    let rows = rows
        .iter()
        .map(|(e, seq)| {
            let created_at = when(e.created_at)?;
            let r#type = <EntryType as Text>::parse(&e.kind)
                .ok_or_else(|| bad(&format!("entry {} has type {:?}, neither credit nor debit", e.id, e.kind)))?;
            Ok(LedgerEntryRow {
                entry_id: e.id.clone(),
                agent_id: e.agent_id.clone(),
                r#type,
                amount_usd: e.amount,
                balance_after_usd: e.balance_after,
                reason: e.reason.clone(),
                reference: e.reference.clone(),
                service: e.service.clone(),
                created_at,
                ledger_seq: *seq,
                created_date: created_at.date_naive(),
                synced_at,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok(LedgerEntryRow::to_batch(&rows)?)
}

fn gaps_batch(gaps: &[(String, Gap)], commit: &CommitInfo, at: DateTime<Utc>) -> Result<RecordBatch, LedgerError> {
    let rows: Vec<LedgerGapRow> = gaps
        .iter()
        .map(|(agent, g)| LedgerGapRow {
            agent_id: agent.clone(),
            kind: g.kind,
            after_entry_id: g.after_entry_id.clone(),
            after_balance_usd: g.after_balance,
            before_entry_id: g.before_entry_id.clone(),
            before_balance_usd: g.before_balance,
            detail: g.detail.clone(),
            run_id: commit.run_id.clone(),
            detected_at: at,
        })
        .collect();
    Ok(LedgerGapRow::to_batch(&rows)?)
}
