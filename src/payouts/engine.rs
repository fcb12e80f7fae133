//! Read -> plan -> **execute**. The executor carries a [`Plan`] out and records what happened; it decides
//! nothing the plan did not (apart from re-checking a batch when another run's intents land first).
//!
//! Per batch: (1) look up the unknown outcomes the plan names, (2) commit the intents of what will be sent,
//! with the previous batch's outcomes, in one log commit that carries the namespace's Delta application
//! transaction, (3) send, (4) keep the outcomes for the next commit. A crash anywhere leaves either no
//! intent (nothing was sent) or an intent that a later run resolves from the provider's evidence.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use futures::StreamExt;

use super::log::{
    IntentCommit, LogEvent, append_events, append_intents, history, intents_app_id, next_intents_version,
};
use super::operation::{EscrowRef, OpKind};
use super::plan::{Decision, Plan, PlanOptions, Step, next_batch, revise};
use super::state::{Event, classify, clip_message};
use super::{PayoutError, PayoutOptions, PayoutReport};
use crate::api::ApiError;
use crate::hooks::{self, CrashPoint};
use crate::progress::Progress;
use crate::provider::{Capabilities, Lookup, LookupContext, Provider, Receipt};
use crate::tables::CommitInfo;

/// Conflicting intent commits in a row before the run gives up (another run keeps winning).
const MAX_CONFLICTS: u32 = 20;

/// At a provider resolved from ledgers: debits of one payer per batch. The ledger answers its last 50
/// entries; a batch of at most 20 leaves room for the payer's other activity between two reads.
const DEBITS_PER_PAYER_PER_BATCH: usize = 20;

pub fn plan_options(opts: &PayoutOptions, caps: Capabilities, now: DateTime<Utc>) -> PlanOptions {
    PlanOptions {
        namespace: opts.namespace.clone(),
        shard: opts.shard,
        max_total: opts.max_total,
        max_count: opts.max_count,
        in_flight_timeout: chrono::Duration::from_std(opts.in_flight_timeout).unwrap_or(chrono::Duration::MAX),
        can_look_up: caps.can_resolve(),
        now,
    }
}

pub struct Executor<'a, P: Provider> {
    provider: &'a P,
    log: DeltaTable,
    commit: &'a CommitInfo,
    opts: &'a PayoutOptions,
    plan_opts: PlanOptions,
    app_id: String,
    /// Escrows made by create actions, by action id (releases naming their create need them).
    created: HashMap<String, String>,
    /// Outcomes not yet committed: they ride with the next batch's intents, or go alone at the end.
    carried: Vec<LogEvent>,
    /// Another run committed intents during this one: every later batch is checked against the log again.
    contended: bool,
    caps: Capabilities,
    /// Provider references owned by logged operations (read once, at a provider resolved from ledgers).
    claimed: Option<HashSet<String>>,
    /// An outcome of this run stayed unknown at a provider without key memory: nothing more is sent, so
    /// that the next run's ledger evidence stays unambiguous.
    halted: bool,
    /// When the previous batch's sends ended (at a provider resolved from ledgers, see `pace`).
    last_sends: Option<std::time::Instant>,
    /// The lease was checked and no intent commit has conflicted since: no other run can have started
    /// sending (its intents would have made ours conflict), so the check need not be repeated.
    leased: bool,
    /// The change feeds read for this run: their positions ride on every intent commit (see `feed`).
    feeds: Vec<super::feed::FeedRead>,
}

impl<'a, P: Provider> Executor<'a, P> {
    pub fn new(
        provider: &'a P,
        log: DeltaTable,
        commit: &'a CommitInfo,
        opts: &'a PayoutOptions,
        plan_opts: PlanOptions,
    ) -> Self {
        let app_id = intents_app_id(&opts.namespace);
        Executor {
            provider,
            log,
            commit,
            opts,
            plan_opts,
            app_id,
            created: HashMap::new(),
            carried: Vec::new(),
            contended: false,
            caps: provider.capabilities(),
            claimed: None,
            halted: false,
            leased: false,
            last_sends: None,
            feeds: Vec::new(),
        }
    }

    /// Carry these feeds' positions in the intent commits, with the intents of what they read.
    pub fn with_feeds(mut self, feeds: Vec<super::feed::FeedRead>) -> Self {
        self.feeds = feeds;
        self
    }

    /// The references logged operations own, loaded on first use.
    async fn claimed(&mut self) -> Result<&mut HashSet<String>, PayoutError> {
        if self.claimed.is_none() {
            self.claimed = Some(super::log::claimed_tx_ids(&self.log).await?);
        }
        Ok(self.claimed.get_or_insert_with(HashSet::new))
    }

    fn settle(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.opts.send_budget).unwrap_or(chrono::Duration::MAX)
    }

    pub async fn run(
        mut self,
        plan: Plan,
        report: &mut PayoutReport,
        progress: &Progress,
        hook: &dyn super::AfterBatch,
    ) -> Result<(), PayoutError> {
        self.created = plan.created;
        let total = (plan.first.len() + plan.second.len()) as u64;
        let mut done = 0u64;
        let mut refused_key = false;
        let distinct = self.caps.ledger_evidence;
        'phases: for mut phase in [plan.first, plan.second] {
            if distinct {
                // Unknown outcomes are resolved before anything new is sent: the payer's ledger then holds
                // no debit of this run's yet when they are judged.
                phase.sort_by_key(|s| !s.resolve_first);
            }
            let mut rest: VecDeque<Step> = phase.into();
            while !rest.is_empty() {
                if crate::stop::requested() {
                    // A stop from outside (`run --follow` and SIGTERM): no new batch; what is left has no
                    // intent and is read again by the next run.
                    report.not_started += rest.len() as u64;
                    break 'phases;
                }
                if self.halted {
                    report.held_after_unknown += rest.len() as u64;
                    done += rest.len() as u64;
                    progress.rows(done, total);
                    continue 'phases;
                }
                let chunk = next_batch(&mut rest, self.opts.batch_size, distinct, DEBITS_PER_PAYER_PER_BATCH);
                done += chunk.len() as u64;
                let batch = self.bind(chunk, report);
                refused_key = self.run_batch(batch, report).await?;
                hook.after_batch().await;
                progress.rows(done, total);
                if refused_key {
                    break 'phases;
                }
            }
        }
        if !self.carried.is_empty() {
            append_events(self.log.clone(), &self.carried, self.commit).await?;
            report.log_commits += 1;
            hooks::reached(CrashPoint::AfterOutcomes).await;
        }
        progress.finish();
        report.past_auto_release = self.provider.past_auto_release();
        if refused_key {
            return Err(PayoutError::Api(ApiError::Unauthorized));
        }
        Ok(())
    }

    /// Releases and disputes naming their create: bind them to the escrow it made, or wait for a later run.
    fn bind(&self, chunk: Vec<Step>, report: &mut PayoutReport) -> Vec<Step> {
        let mut out = Vec::with_capacity(chunk.len());
        for mut s in chunk {
            if let Some(EscrowRef::CreatedBy(c)) = s.op.escrow() {
                match self.created.get(c) {
                    Some(e) => s.op.bind_escrow(&e.clone()),
                    None => {
                        report.waiting += 1;
                        continue;
                    }
                }
            }
            out.push(s);
        }
        out
    }

    /// One batch. Returns whether the provider refused our key (the run stops).
    async fn run_batch(&mut self, steps: Vec<Step>, report: &mut PayoutReport) -> Result<bool, PayoutError> {
        let run_id = self.commit.run_id.as_str();
        let now = Utc::now();

        // 1. Unknown outcomes: the provider's evidence decides; only "no transaction at all" allows a send.
        let (resolve, mut send): (Vec<Step>, Vec<Step>) = steps.into_iter().partition(|s| s.resolve_first);
        for (s, found) in self.look_up(resolve).await? {
            // The evidence is about the attempt before this one.
            let mut e = event(&s, Event::Unknown, run_id, now);
            e.attempt = s.attempt - 1;
            if self.record_lookup(&s, found, &mut e, report) {
                send.push(s);
                continue;
            }
            self.carried.push(e);
        }
        hooks::reached(CrashPoint::AfterLookups).await;
        if self.halted {
            // An outcome stayed unknown at a provider without key memory: nothing more is sent this run.
            report.held_after_unknown += send.len() as u64;
            send.clear();
        }

        // 2. Intent before money moves.
        let (send, intent_at) = self.commit_intents(send, report).await?;
        hooks::reached(CrashPoint::AfterIntents).await;

        // 3. Send, bounded. No send starts so late that another run could already take the intent for
        // abandoned (see `PayoutOptions::send_budget`).
        let latest_start = intent_at + chrono::Duration::from_std(self.opts.in_flight_timeout).unwrap_or_default()
            - chrono::Duration::from_std(self.opts.send_budget).unwrap_or_default();
        self.pace(!send.is_empty()).await;
        let provider = self.provider;
        let sent: Vec<(Step, Option<Result<Receipt, ApiError>>)> = futures::stream::iter(send)
            .map(|s| async move {
                if Utc::now() > latest_start {
                    return (s, None);
                }
                let r = provider.execute(&s.op, &s.key).await;
                hooks::reached(CrashPoint::MidSend).await;
                (s, Some(r))
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;
        if self.caps.ledger_evidence && !sent.is_empty() {
            self.last_sends = Some(std::time::Instant::now());
        }
        hooks::reached(CrashPoint::AfterSend).await;

        // 4. Outcomes, committed with the next batch's intents (or at the end of the run).
        let mut refused_key = false;
        let mut ambiguous: Vec<Step> = Vec::new();
        for (s, result) in sent {
            let mut e = event(&s, Event::Completed, run_id, Utc::now());
            match result {
                None => {
                    // Intent committed, never sent: the intent stays open and a later run looks it up.
                    tracing::warn!(id = %s.op.id, "not sent: too late after its intent; left for a later run");
                    report.unknown += 1;
                    continue;
                }
                Some(Ok(receipt)) => {
                    if let (Some(c), Some(t)) = (self.claimed.as_mut(), receipt.tx_id.as_ref()) {
                        c.insert(t.clone());
                    }
                    e.tx_id = receipt.tx_id;
                    if let Some(esc) = receipt.escrow_id {
                        if s.op.kind() == OpKind::EscrowCreate {
                            self.created.insert(s.op.id.clone(), esc.clone());
                        }
                        e.escrow_id = Some(esc);
                    }
                    e.http_status = Some(200);
                    report.completed += 1;
                    if receipt.replayed {
                        report.replayed += 1;
                    } else {
                        report.usd_moved = report.usd_moved.checked_add(s.op.outflow()).unwrap_or(report.usd_moved);
                    }
                }
                Some(Err(err)) => {
                    refused_key |= matches!(err, ApiError::Unauthorized);
                    let f = classify(&err);
                    e.event = f.event;
                    e.http_status = f.http_status;
                    e.error_code = Some(f.code);
                    e.error_message = Some(f.message);
                    if f.event == Event::Rejected {
                        report.rejected_by_api += 1
                    } else {
                        report.unknown += 1;
                        if self.caps.ledger_evidence && !refused_key {
                            let mut s = s.clone();
                            s.since = Some(intent_at);
                            s.last_error = e.error_code.clone();
                            ambiguous.push(s);
                        }
                    }
                }
            }
            self.carried.push(e);
        }
        if !ambiguous.is_empty() {
            self.resolve_now(ambiguous, report).await?;
        }
        Ok(refused_key)
    }

    /// At a provider resolved from ledgers, one batch's sends start at least a second after the previous
    /// batch's ended. The ledger is read as its newest 50 entries by whole second, and entries of one
    /// second come in no order, so a second holding more than 50 entries cannot be read whole. Batches a
    /// second apart keep every second to one batch (at most 20 debits of a payer): the window then always
    /// reaches back past the previous read, for the ledger copy and for the evidence alike. This bounds a
    /// payer to about 20 payouts a second.
    async fn pace(&self, sending: bool) {
        if let (true, true, Some(t)) = (self.caps.ledger_evidence, sending, self.last_sends) {
            let wait = std::time::Duration::from_millis(1050).saturating_sub(t.elapsed());
            tokio::time::sleep(wait).await;
        }
    }

    /// Ask the provider for evidence about each step. At a provider resolved from ledgers one at a time,
    /// so that a debit found for one operation is claimed before the next is judged.
    async fn look_up(&mut self, steps: Vec<Step>) -> Result<Vec<(Step, Result<Lookup, ApiError>)>, PayoutError> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let provider = self.provider;
        let settle = self.settle();
        if !self.caps.ledger_evidence {
            let empty = HashSet::new();
            let empty = &empty;
            return Ok(futures::stream::iter(steps)
                .map(|s| async move {
                    let ctx = LookupContext {
                        since: s.since,
                        claimed: empty,
                        last_error: s.last_error.as_deref(),
                        now: Utc::now(),
                        settle,
                    };
                    let r = provider.lookup(&s.op, &s.key, &ctx).await;
                    (s, r)
                })
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await);
        }
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            let claimed = self.claimed().await?;
            let ctx =
                LookupContext { since: s.since, claimed, last_error: s.last_error.as_deref(), now: Utc::now(), settle };
            let r = provider.lookup(&s.op, &s.key, &ctx).await;
            if let (Ok(Lookup::Executed { tx_id: Some(t), .. }), Some(c)) = (&r, self.claimed.as_mut()) {
                c.insert(t.clone());
            }
            out.push((s, r));
        }
        Ok(out)
    }

    /// Fill a log event from a lookup's answer and count it. Returns true when the evidence shows the
    /// operation never ran (it may be sent).
    fn record_lookup(
        &mut self,
        s: &Step,
        found: Result<Lookup, ApiError>,
        e: &mut LogEvent,
        report: &mut PayoutReport,
    ) -> bool {
        match found {
            Ok(Lookup::NotExecuted) => return true,
            Ok(Lookup::Executed { tx_id, escrow_id, duplicates, evidence }) => {
                e.event = Event::Completed;
                e.tx_id = tx_id;
                if let Some(esc) = escrow_id {
                    if s.op.kind() == OpKind::EscrowCreate {
                        self.created.insert(s.op.id.clone(), esc.clone());
                    }
                    e.escrow_id = Some(esc);
                }
                e.error_message = Some(match duplicates {
                    0 => evidence.describe().into(),
                    n => format!("{}; {n} more transaction(s) carry this key", evidence.describe()),
                });
                report.completed += 1;
                report.resolved_by_lookup += 1;
                if evidence != crate::provider::Evidence::Key {
                    report.resolved_from_ledger += 1;
                }
            }
            Ok(Lookup::Inconclusive { why }) => {
                tracing::warn!(id = %s.op.id, "evidence inconclusive, the operation stays unknown for a person: {why}");
                e.error_code = Some("lookup_inconclusive".into());
                e.error_message = Some(clip_message(why));
                report.unknown += 1;
                report.needs_person += 1;
            }
            Ok(Lookup::Pending { why }) => {
                tracing::info!(id = %s.op.id, "no evidence yet; the operation stays unknown for a later run: {why}");
                e.error_code = Some("lookup_pending".into());
                e.error_message = Some(clip_message(why));
                report.unknown += 1;
                self.halted |= self.caps.ledger_evidence;
            }
            Err(err) => {
                tracing::warn!(id = %s.op.id, error = %err, "lookup failed; the operation stays unknown for the next run");
                let f = classify(&err);
                (e.http_status, e.error_code, e.error_message) =
                    (f.http_status, Some("lookup_failed".into()), Some(f.message));
                report.unknown += 1;
                self.halted |= self.caps.ledger_evidence;
            }
        }
        false
    }

    /// At a provider without key memory, an ambiguous failure is resolved from the payer's ledger before
    /// anything else is sent. What the ledger settles is logged as completed; anything else stays unknown
    /// and the run sends nothing more (`halted`), leaving it to the next run's evidence.
    async fn resolve_now(&mut self, steps: Vec<Step>, report: &mut PayoutReport) -> Result<(), PayoutError> {
        let run_id = self.commit.run_id.clone();
        for (s, found) in self.look_up(steps).await? {
            let mut e = event(&s, Event::Unknown, &run_id, Utc::now());
            match found {
                Ok(Lookup::Executed { .. }) => {
                    // Replaces the unknown event carried for this attempt.
                    self.carried.retain(|c| !(c.operation_id == s.op.id && c.attempt == s.attempt));
                    report.unknown -= 1;
                    // Sent by this run: the money it moved is this run's.
                    report.usd_moved = report.usd_moved.checked_add(s.op.outflow()).unwrap_or(report.usd_moved);
                    self.record_lookup(&s, found, &mut e, report);
                    self.carried.push(e);
                }
                // Never resent in the run that sent it: the send may still be running at the provider.
                _ => self.halted = true,
            }
        }
        Ok(())
    }

    /// Commit the intents of `steps` (with the carried outcomes) under the namespace's application
    /// transaction. When another run committed intents since this run last read the log, the commit
    /// conflicts: the log is read again for these operations and only what is still this run's to send
    /// is kept. Returns the steps whose intents are committed, and the time they carry.
    async fn commit_intents(
        &mut self,
        mut steps: Vec<Step>,
        report: &mut PayoutReport,
    ) -> Result<(Vec<Step>, DateTime<Utc>), PayoutError> {
        if self.contended {
            steps = self.recheck(steps, report).await?;
        }
        for _ in 0..MAX_CONFLICTS {
            let now = Utc::now();
            if !steps.is_empty() && !self.caps.honours_idempotency_keys && !self.leased {
                steps = self.lease(steps, report).await?;
                self.leased = true;
            }
            if steps.is_empty() {
                return Ok((steps, now));
            }
            let run_id = self.commit.run_id.as_str();
            let mut events = self.carried.clone();
            events.extend(steps.iter().map(|s| event(s, Event::Intent, run_id, now)));
            let version = next_intents_version(&self.log, &self.app_id, now).await?;
            let mut txns = vec![Transaction::new_with_last_update(&self.app_id, version, Some(now.timestamp_millis()))];
            txns.extend(self.feeds.iter().flat_map(|f| f.intent_txns(now.timestamp_millis())));
            match append_intents(self.log.clone(), &events, self.commit, txns).await? {
                IntentCommit::Committed(t) => {
                    self.log = t;
                    self.carried.clear();
                    report.log_commits += 1;
                    return Ok((steps, now));
                }
                IntentCommit::Conflict => {
                    tracing::info!(ops = steps.len(), "another run committed intents meanwhile; reading the log again");
                    self.contended = true;
                    self.leased = false;
                    steps = self.recheck(steps, report).await?;
                }
            }
        }
        Err(PayoutError::Contended { attempts: MAX_CONFLICTS })
    }

    /// At a provider without key memory two runs must never send at once: their payers' ledgers would mix
    /// two runs' debits. While another run's intents in this namespace are open (younger than the in-flight
    /// timeout, no outcome), this run sends nothing. The check reads the same log version the intent commit
    /// builds on, so a run that commits intents after it makes that commit conflict (and the check run again).
    async fn lease(&mut self, steps: Vec<Step>, report: &mut PayoutReport) -> Result<Vec<Step>, PayoutError> {
        let since = Utc::now() - self.plan_opts.in_flight_timeout;
        let open = super::log::open_elsewhere(&self.log, &self.opts.namespace, &self.commit.run_id, since).await?;
        if open.is_empty() {
            return Ok(steps);
        }
        tracing::warn!(
            open = open.len(),
            first = %open[0],
            "another run is sending in this namespace; at a provider without idempotency keys this run sends nothing until it ends"
        );
        report.in_flight_elsewhere += steps.len() as u64;
        self.halted = true;
        Ok(Vec::new())
    }

    /// Read the log as it is now for these steps and keep only those it still calls for.
    async fn recheck(&mut self, steps: Vec<Step>, report: &mut PayoutReport) -> Result<Vec<Step>, PayoutError> {
        self.log.update_state().await.map_err(|e| PayoutError::write(crate::tables::PAYOUT_LOG.name, e))?;
        let ids: Vec<String> = steps.iter().map(|s| s.op.id.clone()).collect();
        let fresh = history(&self.log, &ids).await?;
        let mut o = self.plan_opts.clone();
        o.now = Utc::now();
        let (keep, dropped) = revise(steps, &fresh, &o);
        for (id, d) in dropped {
            tracing::info!(id = %id, decision = ?d, "left to the run that committed it first");
            match d {
                Decision::Final => report.already_final += 1,
                Decision::NeedsPerson => {
                    report.needs_person += 1;
                    report.unknown += 1;
                }
                _ => report.in_flight_elsewhere += 1,
            }
        }
        Ok(keep)
    }
}

/// A log row for a step. Every field an auditor needs comes from the typed operation.
fn event(s: &Step, ev: Event, run_id: &str, at: DateTime<Utc>) -> LogEvent {
    LogEvent {
        operation_id: s.op.id.clone(),
        kind: s.op.kind(),
        event: ev,
        attempt: s.attempt,
        agent_id: s.op.agent_id().map(str::to_string),
        counterparty_agent_id: s.op.counterparty().map(str::to_string),
        amount_usd: s.op.amount(),
        reason: Some(s.op.reason.clone()),
        idempotency_key: s.key.as_str().to_string(),
        tx_id: None,
        escrow_id: s.op.escrow_id().map(str::to_string),
        http_status: None,
        error_code: None,
        error_message: None,
        run_id: run_id.to_string(),
        recorded_at: at,
        recorded_date: at.date_naive(),
    }
}
