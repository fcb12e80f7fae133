//! Reading pfsync's ledger copy back as evidence: the part of one agent's copied ledger that is one
//! unbroken chain from before a given time to the newest entry copied. The live provider answers only an
//! agent's newest entries; when they no longer reach back to an unknown operation's intent, this tail
//! (checked against the live window by `provider::live::evidence::reaching_back`) still can.

use arrow::array::Array;
use chrono::{DateTime, Utc};
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::DeltaTable;

use super::LedgerError;
use super::rows::{LedgerEntryRow, LedgerGapRow};
use crate::provider::LedgerEntry;
use crate::tables::row::{Row, Text};
use crate::tables::{LEDGER_ENTRIES, LEDGER_GAPS, Warehouse, open_existing};

fn query_err(table: &'static str) -> impl Fn(datafusion::error::DataFusionError) -> LedgerError {
    move |e| LedgerError::write(table, e.into())
}

async fn frame(table: &DeltaTable, name: &'static str) -> Result<datafusion::dataframe::DataFrame, LedgerError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(|e| LedgerError::write(name, e))?;
    let provider = table.table_provider().await.map_err(query_err(name))?;
    ctx.read_table(provider).map_err(query_err(name))
}

fn ts(t: DateTime<Utc>) -> datafusion::scalar::ScalarValue {
    datafusion::scalar::ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
}

/// The app id of the transaction a copy commits when it copies an agent's ledger from its very first entry
/// (the first read of that agent answered less than a full window, so the window was the whole ledger).
pub(super) fn origin_app_id(agent: &str) -> String {
    format!("pfsync.ledger.origin.{agent}")
}

/// A part of one agent's copied ledger with no break in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopiedTail {
    /// Oldest first.
    pub entries: Vec<LedgerEntry>,
    /// `entries` begins at the agent's very first ledger entry: nothing was written before it. A young
    /// ledger (a payer funded seconds before its first payout) has no entry before an intent's clock-skew
    /// allowance, and only this says that none is missing.
    pub from_origin: bool,
}

/// `agent`'s copied entries, oldest first, from its newest copied entry created before `before` to its
/// newest copied entry, cut to the part after the last break: a recorded gap, a hole in `ledger_seq`, or a
/// balance that does not continue the entry before. Empty when nothing was copied.
pub async fn unbroken_tail(wh: &Warehouse, agent: &str, before: DateTime<Utc>) -> Result<CopiedTail, LedgerError> {
    let open = |spec| async move { open_existing(wh, spec).await.map_err(LedgerError::Table) };
    let Some(entries) = open(&LEDGER_ENTRIES).await? else { return Ok(CopiedTail::default()) };
    let name = LEDGER_ENTRIES.name;
    let of_agent = col("agent_id").eq(lit(agent));
    let start = frame(&entries, name)
        .await?
        .filter(of_agent.clone().and(col("created_at").lt(lit(ts(before)))))
        .map_err(query_err(name))?
        .aggregate(vec![], vec![datafusion::functions_aggregate::expr_fn::max(col("ledger_seq"))])
        .map_err(query_err(name))?
        .collect()
        .await
        .map_err(query_err(name))?;
    let start: Option<i64> = start
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>())
        .and_then(|a| (a.len() == 1 && !a.is_null(0)).then(|| a.value(0)));
    let mut filter = of_agent;
    if let Some(s) = start {
        filter = filter.and(col("ledger_seq").gt_eq(lit(s)));
    }
    let batches = frame(&entries, name)
        .await?
        .filter(filter)
        .map_err(query_err(name))?
        .collect()
        .await
        .map_err(query_err(name))?;
    let mut rows = LedgerEntryRow::from_batches(&batches)?;
    rows.sort_by_key(|r| r.ledger_seq);

    let mut breaks = std::collections::HashSet::new();
    if let Some(gaps) = open(&LEDGER_GAPS).await? {
        let batches = frame(&gaps, LEDGER_GAPS.name)
            .await?
            .filter(col("agent_id").eq(lit(agent)))
            .map_err(query_err(LEDGER_GAPS.name))?
            .collect()
            .await
            .map_err(query_err(LEDGER_GAPS.name))?;
        let gaps = LedgerGapRow::from_batches(&batches)?;
        breaks.extend(gaps.into_iter().map(|g| g.before_entry_id));
    }
    let tail = tail(rows, &breaks);
    let origin_marked = entries
        .snapshot()
        .map_err(|e| LedgerError::write(name, e))?
        .transaction_version(entries.log_store().as_ref(), origin_app_id(agent))
        .await
        .map_err(|e| LedgerError::write(name, e))?
        .is_some();
    let from_origin = origin_marked && tail.first().is_some_and(|r| r.ledger_seq == 1);
    Ok(CopiedTail { entries: tail.into_iter().map(entry).collect(), from_origin })
}

/// `agent`'s copied debits that pay someone (`payment_sent`) or lock an escrow (`escrow_lock: …`) written
/// from `since` on, each with the reference a logged operation claims it by (the `pay_…` reference, or the
/// entry id of a lock).
pub async fn paying_debits(
    wh: &Warehouse,
    agent: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(String, LedgerEntry)>, LedgerError> {
    let Some(entries) = open_existing(wh, &LEDGER_ENTRIES).await.map_err(LedgerError::Table)? else {
        return Ok(Vec::new());
    };
    let name = LEDGER_ENTRIES.name;
    let paying = col("reason").eq(lit("payment_sent")).or(col("reason").like(lit("escrow_lock: %")));
    let batches = frame(&entries, name)
        .await?
        .filter(
            col("agent_id")
                .eq(lit(agent))
                .and(col("type").eq(lit("debit")))
                .and(col("created_at").gt_eq(lit(ts(since))))
                .and(paying),
        )
        .map_err(query_err(name))?
        .collect()
        .await
        .map_err(query_err(name))?;
    let rows = LedgerEntryRow::from_batches(&batches)?;
    Ok(rows
        .into_iter()
        .map(entry)
        .map(|e| {
            let claim = if e.reason == "payment_sent" { e.reference.clone() } else { None };
            (claim.unwrap_or_else(|| e.id.clone()), e)
        })
        .collect())
}

/// The rows (sorted by `ledger_seq`) after their last break.
fn tail(rows: Vec<LedgerEntryRow>, breaks: &std::collections::HashSet<String>) -> Vec<LedgerEntryRow> {
    let mut from = 0;
    for i in 1..rows.len() {
        let (prev, next) = (&rows[i - 1], &rows[i]);
        let broken = breaks.contains(&next.entry_id)
            || next.ledger_seq != prev.ledger_seq + 1
            || next.balance_before() != Some(prev.balance_after_usd);
        if broken {
            from = i;
        }
    }
    rows.into_iter().skip(from).collect()
}

/// A copied row as the provider's entry.
fn entry(r: LedgerEntryRow) -> LedgerEntry {
    LedgerEntry {
        kind: r.r#type.as_str().to_string(),
        id: r.entry_id,
        agent_id: r.agent_id,
        amount: r.amount_usd,
        balance_after: r.balance_after_usd,
        reason: r.reason,
        reference: r.reference,
        service: r.service,
        created_at: r.created_at.timestamp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rows::EntryType;
    use crate::micros::Micros;

    fn row(id: &str, seq: i64, debit: i64, after: i64) -> LedgerEntryRow {
        let at = DateTime::from_timestamp(1_000 + seq, 0).unwrap();
        LedgerEntryRow {
            entry_id: id.into(),
            agent_id: "ag".into(),
            r#type: EntryType::Debit,
            amount_usd: Micros::from_raw(debit).unwrap(),
            balance_after_usd: Micros::from_raw(after).unwrap(),
            reason: "payment_sent".into(),
            reference: None,
            service: None,
            created_at: at,
            ledger_seq: seq,
            created_date: at.date_naive(),
            synced_at: at,
        }
    }

    #[test]
    fn the_tail_starts_after_the_last_gap_hole_or_broken_balance() {
        let ids = |v: Vec<LedgerEntryRow>| v.into_iter().map(|e| e.entry_id).collect::<Vec<_>>();
        let none = std::collections::HashSet::new();
        let chain = vec![row("a", 1, 1, 99), row("b", 2, 1, 98), row("c", 3, 1, 97)];
        assert_eq!(ids(tail(chain.clone(), &none)), ["a", "b", "c"]);
        let gap: std::collections::HashSet<String> = ["b".to_string()].into();
        assert_eq!(ids(tail(chain.clone(), &gap)), ["b", "c"], "a recorded gap before b");
        let hole = vec![row("a", 1, 1, 99), row("c", 3, 1, 98)];
        assert_eq!(ids(tail(hole, &none)), ["c"], "seq 2 missing");
        let jump = vec![row("a", 1, 1, 99), row("b", 2, 1, 50)];
        assert_eq!(ids(tail(jump, &none)), ["b"], "b does not continue a's balance");
    }
}
