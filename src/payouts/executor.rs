//! Read -> plan -> **execute**, the I/O: performs what the [`Execution`] decides (lookups and sends at the
//! provider, commits to the log, ledger copies, waits on the injected clock) and hands each answer back.
//! It decides nothing; the exactly-once argument is in `execution.rs` and `plan.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use futures::StreamExt;

use super::execution::{Attempts, Effect, Execution, Input, Stuck};
use super::judgement::{Failure, may_start};
use super::ledger_copy;
use super::log::{
    IntentCommit, LogEvent, append_events, append_intents, history, intents_app_id, next_intents_version, payer_app_id,
};
use super::plan::Step;
use super::state::classify;
use super::{PayoutError, PayoutOptions, PayoutReport};
use crate::clock::Clock;
use crate::hooks::{self, CrashPoint};
use crate::ledger::history::CopiedTail;
use crate::progress::Progress;
use crate::provider::{Lookup, LookupContext, Provider, ProviderError, Receipt};
use crate::tables::{CommitInfo, Warehouse};

pub struct Executor<'a> {
    provider: &'a dyn Provider,
    log: DeltaTable,
    commit: &'a CommitInfo,
    opts: &'a PayoutOptions,
    clock: Arc<dyn Clock>,
    app_id: String,
    /// The change feeds read for this run: their positions ride on every intent commit (see `feed`).
    feeds: Vec<super::feed::FeedRead>,
    /// Where the held agents' ledgers are copied (a provider that answers only their newest entries).
    wh: Option<&'a Warehouse>,
    /// The provider's first refusal of our key: the run's error once its outcomes are logged.
    key_refusal: Option<ProviderError>,
}

/// The application transaction of each payer these events debit: every commit carrying a payer's intents
/// or outcomes carries it, so two processes that read the log before either committed for one payer
/// cannot both commit (Delta refuses the second with a concurrent-transaction conflict), whatever their
/// namespaces or run ids. The version is the commit time: only the conflict matters, nobody reads it.
fn payer_txns(events: &[LogEvent], ms: i64) -> Vec<Transaction> {
    let mut payers: Vec<&str> = events.iter().filter_map(|e| e.payer_agent_id.as_deref()).collect();
    payers.sort_unstable();
    payers.dedup();
    payers.into_iter().map(|p| Transaction::new_with_last_update(payer_app_id(p), ms, Some(ms))).collect()
}

fn failure(e: &ProviderError) -> Failure {
    Failure { outcome: classify(e), key_refused: e.key_refused() }
}

impl<'a> Executor<'a> {
    pub fn new(provider: &'a dyn Provider, log: DeltaTable, commit: &'a CommitInfo, opts: &'a PayoutOptions) -> Self {
        Executor {
            provider,
            log,
            commit,
            opts,
            clock: opts.clock.clone(),
            app_id: intents_app_id(&opts.namespace),
            feeds: Vec::new(),
            wh: None,
            key_refusal: None,
        }
    }

    /// Carry these feeds' positions in the intent commits, with the intents of what they read.
    pub fn with_feeds(mut self, feeds: Vec<super::feed::FeedRead>) -> Self {
        self.feeds = feeds;
        self
    }

    /// Where to copy the held agents' ledgers when the execution asks for it.
    pub fn with_warehouse(mut self, wh: &'a Warehouse) -> Self {
        self.wh = Some(wh);
        self
    }

    pub async fn run(mut self, mut ex: Execution, progress: &Progress) -> Result<PayoutReport, PayoutError> {
        // The payers' ledgers as they are before this run judges or sends anything: entries written since
        // the last copy (a killed run's last batch, another process's activity) are in the copy before the
        // window can scroll past them.
        // A run with nothing to send still looks where the provider has a payer of its own: a late request's
        // second debit (or the payer used outside pfsync) is said by the next run at once, not only by the
        // next reconcile.
        let payer = self.provider.held_agents().map(|h| h.payer_id().to_string());
        if ex.has_work() || payer.is_some() {
            ledger_copy::refresh(self.provider, self.wh, self.commit).await;
            ledger_copy::unclaimed_debits(self.wh, &self.log, &mut ex, payer, self.clock.now()).await?;
        }
        let mut input = Input::Go;
        loop {
            let effect = ex.next(input, self.clock.now(), crate::stop::requested()).map_err(|e| match e {
                Stuck::Contended { attempts } => PayoutError::Contended { attempts },
                other => PayoutError::Config(other.to_string()),
            })?;
            input = match effect {
                Effect::LoadClaimed => Input::Claimed(super::log::claimed_tx_ids(&self.log).await?),
                Effect::LookUp { steps, one_by_one, of } => {
                    let found = self.look_up(&mut ex, steps, one_by_one).await;
                    if of == Attempts::Earlier {
                        hooks::reached(CrashPoint::AfterLookups).await;
                    }
                    Input::LookedUp(found)
                }
                Effect::Recheck { steps, claims } => {
                    let history = self.recheck(&steps).await?;
                    Input::Rechecked { history, claims: super::log::claims_of(&self.log, &claims).await? }
                }
                Effect::CheckLease { since, payers } => {
                    Input::Lease { open: super::log::open_intents(&self.log, &payers, since).await? }
                }
                Effect::CommitIntents { events, at } => {
                    let version = next_intents_version(&self.log, &self.app_id, at).await?;
                    let ms = at.timestamp_millis();
                    let mut txns = vec![Transaction::new_with_last_update(&self.app_id, version, Some(ms))];
                    txns.extend(self.feeds.iter().flat_map(|f| f.intent_txns(ms)));
                    txns.extend(payer_txns(&events, ms));
                    self.commit_conflicting(&events, txns).await?
                }
                Effect::Send { steps, pace, latest_start } => {
                    hooks::reached(CrashPoint::AfterIntents).await;
                    if !pace.is_zero() {
                        self.clock.sleep(pace).await;
                    }
                    let sent = self.send(steps, latest_start, progress).await;
                    hooks::reached(CrashPoint::AfterSend).await;
                    Input::Sent(sent)
                }
                Effect::BatchDone { copy_ledgers, done, total } => {
                    if copy_ledgers {
                        ledger_copy::refresh(self.provider, self.wh, self.commit).await;
                    }
                    progress.batch_done(done, total, ex.report().unknown);
                    Input::Go
                }
                Effect::CommitOutcomes(events) => {
                    let txns = payer_txns(&events, self.clock.now().timestamp_millis());
                    let input = if txns.is_empty() {
                        self.log = append_events(self.log.clone(), &events, self.commit).await?;
                        Input::Committed
                    } else {
                        self.commit_conflicting(&events, txns).await?
                    };
                    if input == Input::Committed {
                        hooks::reached(CrashPoint::AfterOutcomes).await;
                    }
                    input
                }
                Effect::Done { key_refused } => {
                    progress.finish();
                    let mut report = ex.into_report();
                    report.past_auto_release = self.provider.past_auto_release();
                    return match (key_refused, self.key_refusal) {
                        (true, Some(e)) => Err(PayoutError::Provider(e)),
                        _ => Ok(report),
                    };
                }
            };
        }
    }

    /// A commit that conflicts with any concurrent commit carrying one of `txns`' application ids.
    async fn commit_conflicting(&mut self, events: &[LogEvent], txns: Vec<Transaction>) -> Result<Input, PayoutError> {
        Ok(match append_intents(self.log.clone(), events, self.commit, txns).await? {
            IntentCommit::Committed(t) => {
                self.log = t;
                Input::Committed
            }
            IntentCommit::Conflict => Input::Conflict,
        })
    }

    async fn look_up(
        &self,
        ex: &mut Execution,
        steps: Vec<Step>,
        one_by_one: bool,
    ) -> Vec<(Step, Result<Lookup, Failure>)> {
        let provider = self.provider;
        let settle = ex.settle();
        if !one_by_one {
            let empty = HashSet::new();
            let empty = &empty;
            let clock = &self.clock;
            return futures::stream::iter(steps)
                .map(|s| async move {
                    let ctx = LookupContext {
                        since: s.since,
                        claimed: empty,
                        last_error: s.last_error.as_deref(),
                        now: clock.now(),
                        settle,
                        copied: &[],
                        copied_from_origin: false,
                        legacy_escrow_tag: s.legacy_escrow_tag,
                    };
                    let r = provider.lookup(&s.op, &s.key, &ctx).await.map_err(|e| failure(&e));
                    (s, r)
                })
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await;
        }
        let mut out = Vec::with_capacity(steps.len());
        let mut tails: HashMap<String, CopiedTail> = HashMap::new();
        let none = CopiedTail::default();
        for s in steps {
            let tail = match (&s.payer, s.since) {
                (Some(p), Some(since)) => {
                    if !tails.contains_key(p) {
                        tails.insert(p.clone(), ledger_copy::tail(self.wh, p, since).await);
                    }
                    tails.get(p).unwrap_or(&none)
                }
                _ => &none,
            };
            let ctx = LookupContext {
                since: s.since,
                claimed: ex.claimed(),
                last_error: s.last_error.as_deref(),
                now: self.clock.now(),
                settle,
                copied: &tail.entries,
                copied_from_origin: tail.from_origin,
                legacy_escrow_tag: s.legacy_escrow_tag,
            };
            let r = provider.lookup(&s.op, &s.key, &ctx).await.map_err(|e| failure(&e));
            ex.note_lookup(&r);
            out.push((s, r));
        }
        out
    }

    /// Send, bounded; each send starts only if the clock still allows it.
    async fn send(
        &mut self,
        steps: Vec<Step>,
        latest_start: chrono::DateTime<chrono::Utc>,
        progress: &Progress,
    ) -> Vec<(Step, Option<Result<Receipt, Failure>>)> {
        let provider = self.provider;
        let clock = &self.clock;
        let sent: Vec<(Step, Option<Result<Receipt, ProviderError>>)> = futures::stream::iter(steps)
            .map(|s| async move {
                if !may_start(clock.now(), latest_start) {
                    return (s, None);
                }
                let r = provider.execute(&s.op, &s.key).await;
                progress.one_done(r.as_ref().is_err_and(|e| e.outcome_unknown()));
                hooks::reached(CrashPoint::MidSend).await;
                (s, Some(r))
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;
        let mut out = Vec::with_capacity(sent.len());
        for (s, r) in sent {
            let r = r.map(|r| {
                r.map_err(|e| {
                    let f = failure(&e);
                    if f.key_refused && self.key_refusal.is_none() {
                        self.key_refusal = Some(e);
                    }
                    f
                })
            });
            out.push((s, r));
        }
        out
    }

    /// Read the log as it is now for these steps.
    async fn recheck(
        &mut self,
        steps: &[Step],
    ) -> Result<std::collections::HashMap<String, Vec<super::log::LogEvent>>, PayoutError> {
        self.log.update_state().await.map_err(|e| PayoutError::write(crate::tables::PAYOUT_LOG.name, e))?;
        let ids: Vec<String> = steps.iter().map(|s| s.op.id.clone()).collect();
        history(&self.log, &ids).await
    }
}
