//! One execution engine for payouts and escrow actions: read and validate the sources, decide each
//! operation's next step from the log, then per batch: resolve unknowns by lookup, commit intents, send,
//! commit outcomes.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use futures::StreamExt;

use super::log::{LogEvent, append_events, append_rejects, history};
use super::operation::{EscrowRef, Fingerprint, OpKind, Operation};
use super::source::{self, ACTION_COLUMNS, DEFAULT_ACTION_SQL, DEFAULT_PAYOUT_SQL, PAYOUT_COLUMNS};
use super::state::{Event, Logged, Next, classify, next, status};
use super::validate::{Reject, check_batch, validate_action, validate_payout};
use super::{PausePoint, PayoutError, PayoutOptions, PayoutReport, Planned, check_namespace};
use crate::api::{
    ApiError, Client, EscrowActionRequest, EscrowCreateRequest, IdempotencyKey, ListQuery, PayoutRequest, Transaction,
};
use crate::money::Usd;
use crate::progress::Progress;
use crate::tables::{
    CommitInfo, ESCROW_ACTIONS, PAYOUT_LOG, PENDING_PAYOUTS, REJECTS, WALLETS, Warehouse, open_existing,
    open_or_create, sql_context,
};

/// An operation with its key and the attempt this run makes.
#[derive(Debug, Clone)]
struct Work {
    op: Operation,
    key: IdempotencyKey,
    attempt: i32,
    /// A previous attempt's outcome is unknown: look the key up before sending.
    resolve_first: bool,
}

/// What one send came back with.
struct Sent {
    event: LogEvent,
    auth_failed: bool,
}

fn event(w: &Work, ev: Event, run_id: &str) -> LogEvent {
    LogEvent {
        operation_id: w.op.id.clone(),
        kind: w.op.kind.as_str(),
        event: ev,
        attempt: w.attempt,
        agent_id: w.op.agent_id.clone(),
        counterparty: w.op.counterparty.clone(),
        amount: w.op.amount,
        reason: Some(w.op.reason.clone()),
        idempotency_key: w.key.as_str().to_string(),
        tx_id: None,
        escrow_id: match &w.op.escrow {
            Some(EscrowRef::Id(e)) => Some(e.clone()),
            _ => None,
        },
        http_status: None,
        error_code: None,
        error_message: None,
        run_id: run_id.to_string(),
        recorded_at: Utc::now(),
    }
}

/// The fingerprint an operation was first logged with.
fn logged_fingerprint(events: &[Logged]) -> Option<Fingerprint> {
    let first = events.iter().find(|e| e.event == Event::Intent)?;
    let kind = OpKind::parse(&first.kind)?;
    Some(Fingerprint {
        kind: kind.as_str(),
        agent_id: first.agent_id.clone(),
        counterparty: first.counterparty.clone(),
        amount: first.amount,
        reason: first.reason.clone().unwrap_or_default(),
    })
}

fn in_shard(id: &str, shard: Option<(u32, u32)>) -> bool {
    match shard {
        None => true,
        Some((index, count)) => crate::rng::hash_bytes(0, id.as_bytes()) % count.max(1) as u64 == index as u64,
    }
}

/// Stop here until killed: a crash point for the kill tests.
async fn pause(opts: &PayoutOptions, at: PausePoint) {
    if opts.pause_at == Some(at) {
        eprintln!("pfsync: paused at {at:?} (PFSYNC_PAUSE_AT); waiting to be killed");
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
}

async fn agents_known(wh: &Warehouse) -> Result<Option<HashSet<String>>, PayoutError> {
    let Some(table) = open_existing(wh, &WALLETS).await? else { return Ok(None) };
    if table.get_file_uris().map_err(|e| PayoutError::write(WALLETS.name, e))?.next().is_none() {
        return Ok(None);
    }
    let ctx = sql_context(wh).await?;
    let batches = ctx
        .sql("SELECT agent_id FROM purpleflea.agents.wallets")
        .await
        .map_err(|e| PayoutError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| PayoutError::Query(e.to_string()))?;
    let mut out = HashSet::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        if let Some(s) = c.as_any().downcast_ref::<arrow::array::StringArray>() {
            out.extend(s.iter().flatten().map(str::to_string));
        }
    }
    Ok(Some(out))
}

pub async fn run_payouts(
    client: &Client,
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &PayoutOptions,
    progress: &Progress,
) -> Result<PayoutReport, PayoutError> {
    check_namespace(&opts.namespace)?;
    if let Some((i, n)) = opts.shard
        && (n == 0 || i >= n)
    {
        return Err(PayoutError::Config(format!("--shard {i}/{n}: the index must be below the count")));
    }
    let run_id = commit.run_id.as_str();
    let mut report = PayoutReport { run_id: run_id.to_string(), dry_run: opts.dry_run, ..PayoutReport::default() };

    // The sources' default tables exist (empty) so upstream jobs and analysts can write and query them.
    // A dry run creates nothing: it reads what is there.
    if !opts.dry_run {
        for spec in [&PAYOUT_LOG, &REJECTS, &PENDING_PAYOUTS, &ESCROW_ACTIONS] {
            open_or_create(wh, spec, commit).await?;
        }
    }
    let log_table = open_existing(wh, &PAYOUT_LOG).await?;

    let ctx = sql_context(wh).await?;
    for (name, location) in &opts.extra_tables {
        crate::tables::register_location(&ctx, wh, name, location).await?;
    }
    // A default source table that does not exist yet (a dry run creates nothing) is an empty source.
    let exists = |name: &str| ctx.table_exist(name).unwrap_or(false);
    let payouts = match &opts.payout_sql {
        Some(sql) => source::payouts_from(&source::query(&ctx, sql, PAYOUT_COLUMNS).await?)?,
        None if exists(PENDING_PAYOUTS.name) => {
            source::payouts_from(&source::query(&ctx, DEFAULT_PAYOUT_SQL, PAYOUT_COLUMNS).await?)?
        }
        None => Vec::new(),
    };
    let actions = match &opts.action_sql {
        Some(sql) => source::actions_from(&source::query(&ctx, sql, ACTION_COLUMNS).await?)?,
        None if exists(ESCROW_ACTIONS.name) => {
            source::actions_from(&source::query(&ctx, DEFAULT_ACTION_SQL, ACTION_COLUMNS).await?)?
        }
        None => Vec::new(),
    };

    let mut ops = Vec::new();
    let mut rejects: Vec<Reject> = Vec::new();
    let mut rows: HashMap<String, String> = HashMap::new();
    // Raw rows are consumed as they are validated: only a refused row's source text is kept.
    for p in payouts {
        if !p.payout_id.as_deref().is_none_or(|id| in_shard(id, opts.shard)) {
            continue;
        }
        report.source_rows += 1;
        match validate_payout(&p) {
            Ok(op) => {
                rows.insert(op.id.clone(), p.source_row);
                ops.push(op);
            }
            Err(r) => rejects.push(r),
        }
    }
    for a in actions {
        if !a.action_id.as_deref().is_none_or(|id| in_shard(id, opts.shard)) {
            continue;
        }
        report.source_rows += 1;
        match validate_action(&a) {
            Ok(op) => {
                rows.insert(op.id.clone(), a.source_row);
                ops.push(op);
            }
            Err(r) => rejects.push(r),
        }
    }

    let ids: Vec<String> = ops.iter().map(|o| o.id.clone()).collect::<HashSet<_>>().into_iter().collect();
    let past = match &log_table {
        Some(t) => history(t, &ids).await?,
        None => HashMap::new(),
    };
    let logged: HashMap<String, Fingerprint> =
        past.iter().filter_map(|(id, ev)| logged_fingerprint(ev).map(|f| (id.clone(), f))).collect();
    let known = if opts.check_agents { agents_known(wh).await? } else { None };
    let (ops, more) = check_batch(ops, &logged, known.as_ref(), &rows);
    drop((rows, known, logged, ctx));
    rejects.extend(more);
    report.rejected_rows = rejects.len() as u64;
    for r in &rejects {
        tracing::warn!(id = r.operation_id.as_deref().unwrap_or("-"), code = r.code.as_str(), "refused: {}", r.message);
    }

    // Escrows made by completed create actions, for releases that name their create.
    let mut created: HashMap<String, String> = HashMap::new();
    let mut first: Vec<Work> = Vec::new();
    let mut second: Vec<Work> = Vec::new();
    for op in ops {
        let events = past.get(&op.id).map(Vec::as_slice).unwrap_or(&[]);
        let st = status(events);
        if let super::state::Status::Completed { escrow_id: Some(e), .. } = &st
            && op.kind == OpKind::EscrowCreate
        {
            created.insert(op.id.clone(), e.clone());
        }
        let (attempt, resolve_first) = match next(&st) {
            Next::Skip => {
                report.already_final += 1;
                continue;
            }
            Next::Send { attempt } => (attempt, false),
            Next::Resolve { attempt } => (attempt, true),
        };
        let key = op.idempotency_key(&opts.namespace).map_err(PayoutError::Config)?;
        let work = Work { op, key, attempt, resolve_first };
        if matches!(work.op.escrow, Some(EscrowRef::CreatedBy(_))) { second.push(work) } else { first.push(work) }
    }

    // The safety brake counts new sends only (a resolution was counted by the run that first sent it).
    let mut total = Usd::ZERO;
    let mut count = 0u64;
    let mut brake = |w: &Work, report: &mut PayoutReport| -> bool {
        if w.resolve_first {
            return true;
        }
        let next_total = total.checked_add(w.op.outflow());
        let over_total = match (opts.max_total, next_total) {
            (Some(max), Some(t)) => t > max,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if over_total || opts.max_count.is_some_and(|m| count + 1 > m) {
            report.held_by_brake += 1;
            return false;
        }
        total = next_total.unwrap_or(total);
        count += 1;
        true
    };
    let sort = |v: &mut Vec<Work>| v.sort_by(|a, b| (a.op.requested_at, &a.op.id).cmp(&(b.op.requested_at, &b.op.id)));
    sort(&mut first);
    sort(&mut second);
    let first: Vec<Work> = first.into_iter().filter(|w| brake(w, &mut report)).collect();
    let second: Vec<Work> = second.into_iter().filter(|w| brake(w, &mut report)).collect();
    if report.held_by_brake > 0 {
        tracing::warn!(
            held = report.held_by_brake,
            "safety brake: operations held back to stay within --max-total-usd / --max-count"
        );
    }

    if opts.dry_run {
        report.plan = first
            .iter()
            .chain(second.iter())
            .map(|w| Planned {
                operation_id: w.op.id.clone(),
                kind: w.op.kind.as_str(),
                agent_id: w.op.agent_id.clone(),
                amount: w.op.amount,
                resolve_first: w.resolve_first,
            })
            .collect();
        return Ok(report);
    }

    let (Some(mut log_table), Some(rejects_table)) = (log_table, open_existing(wh, &REJECTS).await?) else {
        return Err(PayoutError::Config("the payout log or rejects table could not be opened".into()));
    };
    append_rejects(rejects_table, &rejects, commit, Utc::now()).await?;

    let total_work = (first.len() + second.len()) as u64;
    let mut done = 0u64;
    let mut auth_failed = false;
    // Outcomes of the last batch, committed together with the next batch's intents (one log commit per
    // batch instead of two), or on their own at the end.
    let mut carried: Vec<LogEvent> = Vec::new();
    for phase in [first, second] {
        for chunk in phase.chunks(opts.batch_size.max(1)) {
            let mut chunk: Vec<Work> = chunk.to_vec();
            // Releases naming their create: find the escrow it made, or wait for a later run.
            chunk.retain_mut(|w| match &w.op.escrow {
                Some(EscrowRef::CreatedBy(c)) => match created.get(c) {
                    Some(e) => {
                        w.op.escrow = Some(EscrowRef::Id(e.clone()));
                        true
                    }
                    None => {
                        report.waiting += 1;
                        false
                    }
                },
                _ => true,
            });
            let batch = Batch { commit, opts, created: &mut created };
            let (settled, stop) = run_batch(client, &mut log_table, chunk, &mut carried, batch, &mut report).await?;
            done += settled;
            progress.rows(done, total_work);
            if stop {
                auth_failed = true;
                break;
            }
        }
        if auth_failed {
            break;
        }
    }
    if !carried.is_empty() {
        append_events(log_table, &carried, commit).await?;
        report.log_commits += 1;
    }
    progress.finish();
    if auth_failed {
        return Err(PayoutError::Api(ApiError::Unauthorized));
    }
    Ok(report)
}

/// What every batch of a run shares.
struct Batch<'a> {
    commit: &'a CommitInfo,
    opts: &'a PayoutOptions,
    /// Escrows made by create actions, by action id (releases in a later batch need them).
    created: &'a mut HashMap<String, String>,
}

/// One batch: look up unknowns, commit intents (with the previous batch's outcomes, `carried`), send, and
/// leave this batch's outcomes in `carried` for the next commit. Returns how many operations were settled
/// or attempted, and whether the provider refused our key (stop the run).
async fn run_batch(
    client: &Client,
    log_table: &mut deltalake::DeltaTable,
    chunk: Vec<Work>,
    carried: &mut Vec<LogEvent>,
    batch: Batch<'_>,
    report: &mut PayoutReport,
) -> Result<(u64, bool), PayoutError> {
    let Batch { commit, opts, created } = batch;
    let run_id = commit.run_id.as_str();
    let n = chunk.len() as u64;
    let mut outcomes: Vec<LogEvent> = std::mem::take(carried);

    // 1. Unknown outcomes: the provider's transaction list is the truth, kept longer than any key.
    let (resolve, mut send): (Vec<Work>, Vec<Work>) = chunk.into_iter().partition(|w| w.resolve_first);
    let looked_up: Vec<(Work, Result<Option<Transaction>, ApiError>)> = futures::stream::iter(resolve)
        .map(|w| async move {
            let q = ListQuery {
                idempotency_key: Some(w.key.as_str().to_string()),
                limit: Some(10),
                ..ListQuery::default()
            };
            let found = client.list::<Transaction>(&q).await.map(|p| p.rows.into_iter().find_map(Result::ok));
            (w, found)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    for (w, found) in looked_up {
        match found {
            Ok(Some(tx)) => {
                let mut e = event(&w, Event::Completed, run_id);
                e.attempt = w.attempt - 1;
                e.tx_id = Some(tx.tx_id.clone());
                if w.op.kind == OpKind::EscrowCreate {
                    e.escrow_id = tx.reference.clone();
                    if let Some(esc) = &tx.reference {
                        created.insert(w.op.id.clone(), esc.clone());
                    }
                }
                e.error_message = Some("resolved by idempotency-key lookup".into());
                report.completed += 1;
                report.resolved_by_lookup += 1;
                outcomes.push(e);
            }
            // Never executed: safe to send again, with the same key.
            Ok(None) => send.push(w),
            Err(e) => {
                tracing::warn!(id = %w.op.id, error = %e, "lookup failed; the operation stays unresolved for the next run");
                report.unknown += 1;
            }
        }
    }

    // 2. Intent before money moves: a crash from here on leaves a record that the next run resolves. The
    // earlier outcomes (last batch's, and this batch's lookups) ride in the same commit.
    let intents: Vec<LogEvent> = send.iter().map(|w| event(w, Event::Intent, run_id)).collect();
    if !intents.is_empty() {
        outcomes.extend(intents);
        *log_table = append_events(log_table.clone(), &outcomes, commit).await?;
        report.log_commits += 1;
        outcomes.clear();
    }
    pause(opts, PausePoint::AfterIntents).await;

    // 3. Send, bounded.
    let sent: Vec<Sent> = futures::stream::iter(send)
        .map(|w| async move { execute(client, w, run_id).await })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    pause(opts, PausePoint::AfterSend).await;
    let mut auth_failed = false;
    for s in sent {
        auth_failed |= s.auth_failed;
        match s.event.event {
            Event::Completed => {
                report.completed += 1;
                if let (Some(a), "payout" | "escrow_create") = (s.event.amount, s.event.kind) {
                    report.usd_moved = report.usd_moved.checked_add(a).unwrap_or(report.usd_moved);
                }
                if s.event.kind == "escrow_create"
                    && let Some(e) = &s.event.escrow_id
                {
                    created.insert(s.event.operation_id.clone(), e.clone());
                }
            }
            Event::Rejected => report.rejected_by_api += 1,
            _ => report.unknown += 1,
        }
        outcomes.push(s.event);
    }

    // 4. Outcomes: committed with the next batch's intents, or at the end of the run. A crash before then
    // leaves intents without outcomes, which the next run resolves by lookup, as after any crash mid-batch.
    *carried = outcomes;
    Ok((n, auth_failed))
}

async fn execute(client: &Client, w: Work, run_id: &str) -> Sent {
    let key = Some(&w.key);
    let op = &w.op;
    let escrow_id = match &op.escrow {
        Some(EscrowRef::Id(e)) => e.clone(),
        _ => String::new(),
    };
    let action = || EscrowActionRequest { reason: op.reason.clone(), extra: Default::default() };
    let result: Result<(Option<String>, Option<String>), ApiError> = match op.kind {
        OpKind::Payout => {
            let req = PayoutRequest {
                agent_id: op.agent_id.clone().unwrap_or_default(),
                amount_usd: op.amount.unwrap_or(Usd::ZERO),
                reason: op.reason.clone(),
            };
            client.payout(&req, key).await.map(|r| (Some(r.tx_id), None))
        }
        OpKind::EscrowCreate => {
            let req = EscrowCreateRequest {
                buyer_agent_id: op.agent_id.clone().unwrap_or_default(),
                seller_agent_id: op.counterparty.clone().unwrap_or_default(),
                amount_usd: op.amount.unwrap_or(Usd::ZERO),
                description: op.description.clone().unwrap_or_default(),
                metadata: op.metadata.clone(),
            };
            client.escrow_create(&req, key).await.map(|e| (None, Some(e.escrow_id)))
        }
        OpKind::EscrowRelease => {
            client.escrow_release(&escrow_id, &action(), key).await.map(|r| (Some(r.tx_id), Some(r.escrow_id)))
        }
        OpKind::EscrowDispute => {
            client.escrow_dispute(&escrow_id, &action(), key).await.map(|r| (Some(r.tx_id), Some(r.escrow_id)))
        }
    };
    let mut e = event(&w, Event::Completed, run_id);
    let mut auth_failed = false;
    match result {
        Ok((tx, esc)) => {
            e.tx_id = tx;
            if esc.is_some() {
                e.escrow_id = esc;
            }
            e.http_status = Some(200);
        }
        Err(err) => {
            auth_failed = matches!(err, ApiError::Unauthorized);
            let f = classify(&err);
            e.event = f.event;
            e.http_status = f.http_status.or(auth_failed.then_some(401));
            e.error_code = Some(if auth_failed { "unauthorized".into() } else { f.code });
            e.error_message = Some(f.message);
        }
    }
    Sent { event: e, auth_failed }
}
