//! `pfsync resolve`: every operation that waits for a person, with the provider's evidence as pfsync's copies
//! hold it; and a person's decision about one, checked and appended to the payout log (`payouts::resolve`
//! decides, this module reads and commits).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use arrow::array::RecordBatch;
use chrono::{DateTime, Duration, Utc};
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::kernel::transaction::TransactionError;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};

use super::error::AppError;
use super::step::Context;
use crate::cli::{ResolveArgs, ResolveDecision};
use crate::ledger::rows::{LedgerEntryRow, LedgerGapRow};
use crate::payouts::log::LogEvent;
use crate::payouts::resolve::{
    Case, Decision, Evidence, Fit, Person, Refusal, Source, assess, candidates, check_decidable, check_reference,
    claims, decision_event, gaps_in_window, needs_person,
};
use crate::sync::rows::TransactionRow;
use crate::tables::row::Row;
use crate::tables::{CommitInfo, LEDGER_ENTRIES, LEDGER_GAPS, PAYOUT_LOG, TRANSACTIONS, TableError, open_existing};

/// How often a decision is tried again after a payouts run committed to the log meanwhile (each time the
/// operation is read again and the decision refused if it changed).
const COMMIT_ATTEMPTS: u32 = 20;

/// The decision the flags ask for, checked before anything is read.
fn decision_of(args: &ResolveArgs) -> Result<Option<(Decision, String, String)>, AppError> {
    let Some(d) = args.decision else {
        if args.tx.is_some() || args.by.is_some() || args.note.is_some() {
            return Err(AppError::Usage(
                "--tx, --by and --note go with a decision (completed, never-ran, abandoned)".into(),
            ));
        }
        return Ok(None);
    };
    let text = |flag: &str, v: &Option<String>| -> Result<String, AppError> {
        match v.as_deref().map(str::trim) {
            // Printed by reconcile's report and read by auditors: one line, no control character.
            Some(t) if !t.is_empty() && t.len() <= 1000 && !t.chars().any(char::is_control) => Ok(t.to_string()),
            _ => Err(AppError::Usage(format!(
                "{flag} is required with a decision (1..=1000 characters, no control character)"
            ))),
        }
    };
    let by = text("--by", &args.by)?;
    let note = text("--note", &args.note)?;
    let decision = match d {
        ResolveDecision::Completed => Decision::Completed { tx: text("--tx", &args.tx)? },
        ResolveDecision::NeverRan | ResolveDecision::Abandoned if args.tx.is_some() => {
            return Err(AppError::Usage("--tx goes with `completed` only".into()));
        }
        ResolveDecision::NeverRan => Decision::NeverRan,
        ResolveDecision::Abandoned => Decision::Abandoned,
    };
    Ok(Some((decision, by, note)))
}

pub(super) async fn resolve(ctx: &Context, args: &ResolveArgs) -> Result<(), AppError> {
    let decision = decision_of(args)?;
    let timeout = Duration::seconds(i64::try_from(args.in_flight_timeout).unwrap_or(i64::MAX / 1000));
    let clock = crate::clock::process_clock();
    let wh = &ctx.settings.warehouse;
    match (&args.operation_id, decision) {
        (Some(id), Some((d, by, note))) => {
            let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "resolve" };
            let ask = Ask { id, decision: &d, by: &by, note: &note, in_flight_timeout: timeout };
            let event = decide(wh, &commit, &ask, clock.as_ref()).await?;
            println!(
                "{}",
                crate::logging::escape_control(&format!(
                    "recorded: {} {} (attempt {}{}) by {by}: {note}",
                    event.operation_id,
                    event.event.as_str(),
                    event.attempt,
                    event.tx_id.as_deref().map(|t| format!(", tx {t}")).unwrap_or_default()
                ))
            );
            Ok(())
        }
        (id, _) => {
            let now = clock.now();
            let Some(table) = open_existing(wh, &PAYOUT_LOG).await? else {
                return match id {
                    Some(id) => Err(Refusal::NotLogged(id.clone()).into()),
                    None => {
                        println!("no operation needs a person (the payout log is empty)");
                        Ok(())
                    }
                };
            };
            let all = read_log(&table, None).await?;
            let mut by_op: BTreeMap<&str, Vec<LogEvent>> = BTreeMap::new();
            for e in &all {
                by_op.entry(e.operation_id.as_str()).or_default().push(e.clone());
            }
            let cases: Vec<Case> = match id {
                Some(id) => {
                    let events = by_op.get(id.as_str()).ok_or_else(|| Refusal::NotLogged(id.clone()))?;
                    Case::of(events).into_iter().collect()
                }
                None => {
                    by_op.values().filter(|ev| needs_person(ev, now, timeout)).filter_map(|ev| Case::of(ev)).collect()
                }
            };
            let ev = read_evidence(wh, cases.iter().filter_map(Case::window_from).min(), None).await?;
            let claimed = claims(&all);
            let mut out = String::new();
            if id.is_none() {
                let _ = writeln!(
                    out,
                    "{} operation(s) need a person (unknown, or in flight past the {} s in-flight timeout)",
                    cases.len(),
                    timeout.num_seconds()
                );
            }
            for case in &cases {
                out.push('\n');
                describe(&mut out, case, &ev, &candidates(case, &ev, &claimed), now);
            }
            // Values from outside (ids, provider messages) are printed one line each, with no control character.
            for line in out.lines() {
                println!("{}", crate::logging::escape_control(line));
            }
            Ok(())
        }
    }
}

/// One operation as a person reads it: what it is, what was logged, the evidence, and why it waits.
fn describe(
    out: &mut String,
    case: &Case,
    ev: &Evidence,
    found: &[crate::payouts::resolve::Candidate],
    now: DateTime<Utc>,
) {
    let s = &case.summary;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let at = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or("-".into());
    let status = s.status.name().map(crate::tables::row::Text::as_str).unwrap_or("new");
    let _ = writeln!(out, "{} {} {} (attempts {})", s.operation_id, s.kind.as_str(), status, s.attempts);
    let _ = writeln!(
        out,
        "  payer {}, payee {}{}, amount {} USD{}",
        opt(&case.payer),
        opt(&s.agent_id),
        s.counterparty_agent_id.as_deref().map(|c| format!(" (seller {c})")).unwrap_or_default(),
        s.amount_usd.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        s.escrow_id.as_deref().map(|e| format!(", escrow {e}")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  first intent {}, latest intent {}, last recorded {}",
        at(case.first_intent_at),
        at(case.last_intent_at),
        at(Some(s.last_recorded_at))
    );
    for m in &case.messages {
        let _ = writeln!(out, "  logged: {m}");
    }
    let _ = writeln!(out, "  evidence: {}, from {}", Source::of(case).describe(), at(case.window_from()));
    if found.is_empty() {
        let _ = writeln!(out, "    no record of this kind and amount");
    }
    for c in found {
        let _ = writeln!(
            out,
            "    candidate {} {} {} at {}{} {}",
            c.reference,
            c.what,
            c.amount,
            c.at.format("%Y-%m-%d %H:%M:%S UTC"),
            c.payee.as_deref().map(|p| format!(" to {p}")).unwrap_or_default(),
            c.claimed_by.as_deref().map(|o| format!("claimed by {o}")).unwrap_or_else(|| "unclaimed".into())
        );
    }
    for g in gaps_in_window(case, ev) {
        let _ = writeln!(
            out,
            "    gap {} after {} before {} (found {}): {}",
            crate::tables::row::Text::as_str(g.kind),
            g.after_entry_id,
            g.before_entry_id,
            g.detected_at.format("%Y-%m-%d %H:%M:%S UTC"),
            g.detail
        );
    }
    let _ = writeln!(out, "  why: {}", assess(case, ev, found, now));
    let _ = writeln!(
        out,
        "  decide: pfsync resolve {} completed --tx REF | never-ran | abandoned --by WHO --note WHY",
        s.operation_id
    );
}

/// What a person asks to record, with who and why.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub id: &'a str,
    pub decision: &'a Decision,
    pub by: &'a str,
    pub note: &'a str,
    pub in_flight_timeout: Duration,
}

/// A checked decision and the log version it was checked at.
pub struct Prepared {
    table: DeltaTable,
    /// The operation's events at that version.
    pub events: Vec<LogEvent>,
    pub event: LogEvent,
}

/// Check and record a decision. The log is read at one version and the event committed on exactly that
/// version (no retry past another commit): a payouts run that wrote to the log meanwhile makes the commit
/// fail, and the operation is read again; if its events changed, the decision is refused.
pub async fn decide(
    wh: &crate::tables::Warehouse,
    commit: &CommitInfo,
    ask: &Ask<'_>,
    clock: &dyn crate::clock::Clock,
) -> Result<LogEvent, AppError> {
    let mut seen: Option<Vec<LogEvent>> = None;
    for _ in 0..COMMIT_ATTEMPTS {
        let p = prepare(wh, &commit.run_id, ask, clock.now(), seen.as_deref()).await?;
        match commit_prepared(p, commit).await? {
            Ok(event) => return Ok(event),
            Err(events) => seen = Some(events),
        }
        tracing::info!(operation = %ask.id, "the payout log moved on while deciding; reading the operation again");
    }
    Err(AppError::Internal(format!(
        "the payout log kept moving ({COMMIT_ATTEMPTS} commits conflicted); run pfsync resolve again"
    )))
}

/// Read the log, check the decision against it (and, for `completed`, the reference against the copies and
/// the claims at that version), and build its event. `seen`: the operation's events when an earlier
/// attempt's commit conflicted; refused if they changed since.
pub async fn prepare(
    wh: &crate::tables::Warehouse,
    run_id: &str,
    ask: &Ask<'_>,
    now: DateTime<Utc>,
    seen: Option<&[LogEvent]>,
) -> Result<Prepared, AppError> {
    let id = ask.id;
    let table = open_existing(wh, &PAYOUT_LOG).await?.ok_or_else(|| Refusal::NotLogged(id.into()))?;
    let read = read_log(&table, Some(id)).await?;
    let events: Vec<LogEvent> = read.iter().filter(|e| e.operation_id == id).cloned().collect();
    if let Some(before) = seen
        && let Some(what) = changed(before, &events)
    {
        return Err(Refusal::Changed { id: id.into(), what }.into());
    }
    let attempt = check_decidable(id, &events, ask.decision, now, ask.in_flight_timeout)?;
    let fit = match ask.decision {
        Decision::Completed { tx } => {
            let case = Case::of(&events).ok_or_else(|| Refusal::NotLogged(id.into()))?;
            let ev = read_evidence(wh, None, Some(tx)).await?;
            check_reference(&case, tx, &ev, &claims(&read))?
        }
        _ => Fit::default(),
    };
    let event =
        decision_event(&events, attempt, ask.decision, &fit, Person { by: ask.by, note: ask.note }, run_id, now)
            .ok_or_else(|| Refusal::NotLogged(id.into()))?;
    Ok(Prepared { table, events, event })
}

/// Commit a prepared decision on the version it was checked at: the event, or (another commit took that
/// version first) the operation's events as they were checked.
pub async fn commit_prepared(p: Prepared, commit: &CommitInfo) -> Result<Result<LogEvent, Vec<LogEvent>>, AppError> {
    Ok(if commit_on_read_version(p.table, &p.event, commit).await? { Ok(p.event) } else { Err(p.events) })
}

/// What `after` holds that `before` did not, in words (`None`: the operation did not change).
fn changed(before: &[LogEvent], after: &[LogEvent]) -> Option<String> {
    let key = |e: &LogEvent| (e.event.as_str(), e.attempt, e.run_id.clone(), e.recorded_at);
    let old: HashSet<_> = before.iter().map(key).collect();
    let new: Vec<String> = after
        .iter()
        .filter(|e| !old.contains(&key(e)))
        .map(|e| format!("{} of attempt {}", e.event.as_str(), e.attempt))
        .collect();
    (!new.is_empty()).then(|| new.join(", "))
}

/// Append `event` as the version right after the one `table` was read at; false when another commit took
/// that version first.
async fn commit_on_read_version(table: DeltaTable, event: &LogEvent, commit: &CommitInfo) -> Result<bool, AppError> {
    let result = table
        .write(vec![LogEvent::to_batch(std::slice::from_ref(event)).map_err(crate::payouts::PayoutError::from)?])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit.properties().with_max_retries(0))
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(DeltaTableError::Transaction { source: TransactionError::MaxCommitAttempts(_) })
        | Err(DeltaTableError::Transaction { source: TransactionError::CommitConflict(_) }) => Ok(false),
        Err(e) => Err(crate::payouts::PayoutError::write(PAYOUT_LOG.name, e).into()),
    }
}

fn query_error(e: datafusion::error::DataFusionError) -> AppError {
    TableError::Query(e.to_string()).into()
}

/// The log's events at the version `table` holds: all of them, or one operation's and every `completed`
/// (the claims a reference is checked against).
async fn read_log(table: &DeltaTable, id: Option<&str>) -> Result<Vec<LogEvent>, AppError> {
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| crate::payouts::PayoutError::write(PAYOUT_LOG.name, e))?;
    let provider = table.table_provider().await.map_err(query_error)?;
    let mut df = ctx.read_table(provider).map_err(query_error)?;
    if let Some(id) = id {
        df = df.filter(col("operation_id").eq(lit(id)).or(col("event").eq(lit("completed")))).map_err(query_error)?;
    }
    let batches = df.collect().await.map_err(query_error)?;
    Ok(LogEvent::from_batches(&batches).map_err(crate::payouts::PayoutError::from)?)
}

/// The copies' records: from the earliest window on (`from`), or those of one reference (the debit a
/// person names and its credit, whenever they were written).
async fn read_evidence(
    wh: &crate::tables::Warehouse,
    from: Option<DateTime<Utc>>,
    reference: Option<&str>,
) -> Result<Evidence, AppError> {
    use datafusion::prelude::Expr;
    if from.is_none() && reference.is_none() {
        return Ok(Evidence::default());
    }
    let ctx = crate::tables::sql_context_of(wh, &[&LEDGER_ENTRIES, &LEDGER_GAPS, &TRANSACTIONS]).await?;
    let since = |column: &str| -> Option<Expr> {
        let t = ScalarValue::TimestampMicrosecond(Some(from?.timestamp_micros()), Some("UTC".into()));
        Some(col(column).gt_eq(lit(t)))
    };
    let naming = |columns: &[&str]| -> Option<Expr> {
        let r = reference?;
        columns.iter().map(|c| col(*c).eq(lit(r))).reduce(Expr::or)
    };
    let rows = |name: &'static str, filter: Option<Expr>| {
        let ctx = ctx.clone();
        async move {
            let Some(filter) = filter else { return Ok::<Vec<RecordBatch>, AppError>(Vec::new()) };
            // A table no run has created yet (no catalog of that name at all) holds nothing.
            if !ctx.table_exist(name).unwrap_or(false) {
                return Ok(Vec::new());
            }
            let df = ctx.table(name).await.map_err(query_error)?;
            df.filter(filter).map_err(query_error)?.collect().await.map_err(query_error)
        }
    };
    let entries = rows(LEDGER_ENTRIES.name, since("created_at").or(naming(&["entry_id", "reference"]))).await?;
    let gaps = rows(LEDGER_GAPS.name, since("detected_at")).await?;
    let transactions = rows(TRANSACTIONS.name, since("created_at").or(naming(&["tx_id"]))).await?;
    let decode = |e: crate::tables::row::RowError| AppError::from(crate::payouts::PayoutError::from(e));
    Ok(Evidence {
        entries: LedgerEntryRow::from_batches(&entries).map_err(decode)?,
        gaps: LedgerGapRow::from_batches(&gaps).map_err(decode)?,
        transactions: TransactionRow::from_batches(&transactions).map_err(decode)?,
    })
}
