//! Read -> plan -> **execute**, the decisions: a pure state machine that carries a [`Plan`] out one batch
//! at a time. It performs nothing; it says what to do next ([`Effect`]) and learns what happened
//! ([`Input`]), with the time as an input. `executor.rs` performs the effects against the provider and the
//! log and hands the answers back; it decides nothing.
//!
//! Per batch:
//! 1. the unknown outcomes the plan names are looked up; the provider's evidence decides, and only "no
//!    transaction at all" (`Lookup::NotExecuted`) lets one be sent again;
//! 2. at a provider without idempotency keys, the lease, per payer and before the ledger is read: while
//!    another process's intents for a payer are open (any namespace, any run id), this run neither judges
//!    that payer's ledger nor sends for it (two processes' debits would mix in one ledger). Every commit
//!    that carries a payer's intents or outcomes also carries the payer's application transaction, so of
//!    two processes that checked the lease at once only one commits;
//! 3. the intents of what will be sent are committed, with the previous batch's outcomes, in one log
//!    commit that carries the namespace's Delta application transaction: of two runs that read the log at
//!    once only one commits, the other reads the log again and keeps only what is still its to send;
//! 4. the sends, none started later than `in_flight_timeout - send_budget` after its intent, so a run that
//!    finds an intent older than the timeout knows its sender has stopped; at a provider resolved from
//!    ledgers, batches start a second apart (see [`pace`]);
//! 5. the outcomes are kept for the next commit; at a provider without key memory an ambiguous failure is
//!    looked up at once, and what stays unknown holds back only what its evidence could be confused with
//!    ([`Hold`]: the same payer, kind and amount, or the same escrow) until a later run judges it;
//! 6. before a commit that claims provider transactions lands, a conflict re-reads who claims them: a
//!    transaction another operation claimed meanwhile is never taken (the outcome stays unknown).
//!
//! A crash anywhere leaves either no intent (nothing was sent) or an intent that a later run resolves
//! from the provider's evidence.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PayoutReport;
use super::judgement::{Failure, Hold, Judged, event, judge, pace};
use super::log::{LogEvent, OpenIntent};
use super::plan::{Decision, Plan, PlanOptions, Step, next_batch, revise};
use super::state::{Event, clip_message};
use crate::money::Usd;
use crate::operation::{EscrowRef, OpKind};
use crate::provider::{Capabilities, Lookup, Receipt};

/// Conflicting intent commits in a row before the run gives up (another run keeps winning).
pub const MAX_CONFLICTS: u32 = 20;

/// At a provider resolved from ledgers: debits of one payer per batch. The ledger answers its last 50
/// entries; a batch of at most 20 leaves room for the payer's other activity between two reads.
pub const DEBITS_PER_PAYER_PER_BATCH: usize = 20;

/// The run's settings the decisions need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub caps: Capabilities,
    pub plan: PlanOptions,
    pub run_id: String,
    pub batch_size: usize,
    /// The longest one send can take, retries included.
    pub send_budget: chrono::Duration,
    /// Copy the held agents' ledgers after every batch (a provider that answers only their newest entries).
    pub copy_ledgers: bool,
}

/// What the executor is to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Read the provider references logged operations own (once, before the first ledger lookup).
    LoadClaimed,
    /// Ask the provider for evidence about these steps. `one_by_one`: each answer goes to
    /// [`Execution::note_lookup`] before the next is asked, so that a debit found for one operation is
    /// claimed before the next is judged (a provider resolved from ledgers); otherwise all at once.
    /// `of`: whose outcome is looked up (once per batch the earlier attempts', possibly none).
    LookUp { steps: Vec<Step>, one_by_one: bool, of: Attempts },
    /// Read the log again for these operations (another run committed meanwhile), and who claims these
    /// provider transactions now.
    Recheck { steps: Vec<Step>, claims: Vec<String> },
    /// The intents recorded after `since` for these payers (any namespace, any process) that have no outcome
    /// yet.
    CheckLease { since: DateTime<Utc>, payers: Vec<String> },
    /// Append these events (the carried outcomes, then the intents) in one commit carrying the namespace's
    /// application transaction (and the change feeds' positions) at `at`.
    CommitIntents { events: Vec<LogEvent>, at: DateTime<Utc> },
    /// Wait `pace` (see [`pace`]), then send these steps; none may start after `latest_start` (see
    /// [`may_start`]). Given once per batch, after its intents, whether or not it holds a step.
    Send { steps: Vec<Step>, pace: Duration, latest_start: DateTime<Utc> },
    /// The batch is over: copy the held agents' ledgers if asked, report progress.
    BatchDone { copy_ledgers: bool, done: u64, total: u64 },
    /// Append the outcomes still carried in one commit, carrying their payers' application transactions
    /// (a conflict answers [`Input::Conflict`]).
    CommitOutcomes(Vec<LogEvent>),
    /// The run is over. `key_refused`: it stopped because the provider refused the key.
    Done { key_refused: bool },
}

/// Whose outcomes a lookup is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Earlier attempts (this or another run's), before the batch's intents.
    Earlier,
    /// This batch's own sends that failed ambiguously, at a provider resolved from ledgers.
    JustSent,
}

/// What happened, in answer to the last effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start the run (or go on after [`Effect::BatchDone`]).
    Go,
    Claimed(HashSet<String>),
    LookedUp(Vec<(Step, Result<Lookup, Failure>)>),
    Rechecked {
        history: HashMap<String, Vec<LogEvent>>,
        /// For each provider transaction asked about, the operations whose `completed` claims it.
        claims: HashMap<String, Vec<String>>,
    },
    Lease {
        open: Vec<OpenIntent>,
    },
    Committed,
    Conflict,
    /// Each step with its answer, or `None` when it was not started (too late after its intent).
    Sent(Vec<(Step, Option<Result<Receipt, Failure>>)>),
}

/// The run cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stuck {
    #[error("another run kept committing intents for this namespace; {attempts} commits conflicted")]
    Contended { attempts: u32 },
    #[error("the executor answered {input} where {expected} was expected")]
    Protocol { expected: &'static str, input: String },
}

/// Where the machine is, and what it waits for.
#[derive(Debug, Clone)]
enum Stage {
    Start,
    /// The references logged operations own, before these lookups.
    Claimed {
        then: Box<Stage>,
        resolve: Vec<Step>,
    },
    Lookups {
        send: Vec<Step>,
    },
    Recheck {
        conflicts: u32,
    },
    /// The lease; `then`: the batch's lookups and sends still to come (checked before the ledger is
    /// read), else straight to the intent commit.
    Lease {
        conflicts: u32,
        then: Option<(Vec<Step>, Vec<Step>)>,
    },
    Commit {
        at: DateTime<Utc>,
        conflicts: u32,
    },
    Sends {
        intent_at: DateTime<Utc>,
    },
    ResolveNow,
    BatchDone,
    Final {
        conflicts: u32,
    },
    /// The final commit conflicted: who claims its transactions is read again.
    FinalRecheck {
        conflicts: u32,
    },
    Done,
}

/// The run's execution: everything decided between the plan and the log, with no I/O.
#[derive(Debug)]
pub struct Execution {
    s: Settings,
    stage: Stage,
    phases: VecDeque<VecDeque<Step>>,
    total: u64,
    done: u64,
    /// Escrows made by create actions, by action id (releases naming their create need them).
    created: HashMap<String, String>,
    /// Outcomes not yet committed: they ride with the next batch's intents, or go alone at the end.
    carried: Vec<LogEvent>,
    /// The steps between the lookups and the sends of the batch in hand.
    sending: Vec<Step>,
    /// Another run committed intents during this one: every later batch is checked against the log again.
    contended: bool,
    /// Provider references owned by logged operations (read once, at a provider resolved from ledgers).
    claimed: Option<HashSet<String>>,
    /// What may not be sent this run: payers another process is sending for, and what an outcome that
    /// stayed unknown (at a provider without key memory) could be confused with.
    holds: HashSet<Hold>,
    /// How many holds the phases still to come were last filtered by.
    holds_applied: usize,
    /// The lease was checked and no commit has conflicted since: no other process can have started sending
    /// for a payer of ours (its commit would have made ours conflict), so the check need not be repeated.
    leased: bool,
    /// The intents this process committed (operation, attempt): its own, whatever the run id, so shards
    /// that share a run id still see each other's intents as another sender's.
    mine: HashSet<(String, i32)>,
    /// Carried `completed` outcomes taken from the provider's evidence (operation, attempt), not from its
    /// answer to our send: the ones a concurrent claim can take back.
    from_evidence: HashSet<(String, i32)>,
    /// When the previous batch's sends ended (at a provider resolved from ledgers, see [`pace`]).
    last_sends: Option<DateTime<Utc>>,
    key_refused: bool,
    report: PayoutReport,
}

/// The payers these steps debit, each once, in order.
fn payers_of<'a>(steps: impl IntoIterator<Item = &'a Step>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in steps.into_iter().filter_map(|s| s.payer.as_ref()) {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

impl Execution {
    pub fn new(plan: Plan, settings: Settings, report: PayoutReport) -> Execution {
        let total = (plan.first.len() + plan.second.len()) as u64;
        let mut phases = VecDeque::new();
        for mut phase in [plan.first, plan.second] {
            if settings.caps.ledger_evidence {
                // Unknown outcomes are resolved before anything new is sent: the payer's ledger then holds
                // no debit of this run's yet when they are judged.
                phase.sort_by_key(|s| !s.resolve_first);
            }
            phases.push_back(phase.into());
        }
        Execution {
            s: settings,
            stage: Stage::Start,
            phases,
            total,
            done: 0,
            created: plan.created,
            carried: Vec::new(),
            sending: Vec::new(),
            contended: false,
            claimed: None,
            holds: HashSet::new(),
            holds_applied: 0,
            leased: false,
            mine: HashSet::new(),
            from_evidence: HashSet::new(),
            last_sends: None,
            key_refused: false,
            report,
        }
    }

    /// Is there anything to look up or send?
    pub fn has_work(&self) -> bool {
        self.total > 0
    }

    /// The payers of what is to be looked up or sent, each once.
    pub fn payers(&self) -> Vec<String> {
        payers_of(self.phases.iter().flatten())
    }

    /// Would an open unknown outcome explain a debit of `amount` from `payer` at `at`: one of that amount
    /// from that payer, whose intent came before (less `slack`)?
    pub fn explains(&self, payer: &str, amount: Usd, at: DateTime<Utc>, slack: chrono::Duration) -> bool {
        self.phases.iter().flatten().any(|s| {
            s.resolve_first
                && s.payer.as_deref() == Some(payer)
                && s.op.amount() == Some(amount)
                && s.since.is_some_and(|t| at >= t - slack)
        })
    }

    /// Debits found on the payers' ledgers that no operation claims and no open unknown explains.
    pub fn note_unclaimed_debits(&mut self, n: u64) {
        self.report.unclaimed_debits += n;
    }

    /// The report so far (the whole report once [`Effect::Done`] was given).
    pub fn report(&self) -> &PayoutReport {
        &self.report
    }

    pub fn into_report(self) -> PayoutReport {
        self.report
    }

    /// The references logged operations own, for a lookup's context (empty where they are not read).
    pub fn claimed(&self) -> &HashSet<String> {
        static NONE: std::sync::OnceLock<HashSet<String>> = std::sync::OnceLock::new();
        self.claimed.as_ref().unwrap_or_else(|| NONE.get_or_init(HashSet::new))
    }

    /// How long after an intent "it never ran" cannot yet be concluded: twice the longest send, so that a
    /// request held on its way (a proxy, a stalled connection) past the client's own budget is still waited
    /// for before anything is sent again.
    pub fn settle(&self) -> chrono::Duration {
        self.s.send_budget * 2
    }

    /// An answer of a one-by-one lookup: a debit it found is claimed before the next step is judged.
    pub fn note_lookup(&mut self, found: &Result<Lookup, Failure>) {
        if let (Ok(Lookup::Executed { tx_id: Some(t), .. }), Some(c)) = (found, self.claimed.as_mut()) {
            c.insert(t.clone());
        }
    }

    fn protocol(&self, expected: &'static str, input: &Input) -> Stuck {
        Stuck::Protocol { expected, input: format!("{input:?}").chars().take(200).collect() }
    }

    /// The next effect, given what happened and the time now. `stop_requested`: a stop from outside
    /// (SIGTERM in `run --follow`): no new batch starts.
    pub fn next(&mut self, input: Input, now: DateTime<Utc>, stop_requested: bool) -> Result<Effect, Stuck> {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        match (stage, input) {
            (Stage::Start | Stage::BatchDone, Input::Go) => Ok(self.start_batch(stop_requested, now)),
            (Stage::Claimed { then, resolve }, Input::Claimed(mut c)) => {
                // The log holds what is committed; this run's outcomes not yet committed (answered before the
                // claims were first read) claim their transactions too, or a lookup of an equal amount would
                // take one of them for its own.
                c.extend(self.carried.iter().filter(|e| e.event == Event::Completed).filter_map(|e| e.tx_id.clone()));
                self.claimed = Some(c);
                let of = if matches!(*then, Stage::ResolveNow) { Attempts::JustSent } else { Attempts::Earlier };
                self.stage = *then;
                Ok(Effect::LookUp { steps: resolve, one_by_one: true, of })
            }
            (Stage::Lookups { send }, Input::LookedUp(found)) => {
                self.sending = send;
                let run_id = self.s.run_id.clone();
                for (s, f) in found {
                    // The evidence is about the attempt before this one.
                    let mut e = event(&s, Event::Unknown, &run_id, now);
                    e.attempt = s.attempt - 1;
                    self.record(&s, f, e, false);
                }
                // An outcome that stayed unknown holds back what could be confused with it.
                let sending = std::mem::take(&mut self.sending);
                self.sending = self.hold_back(sending);
                Ok(self.before_intents(0, now))
            }
            (Stage::Recheck { conflicts }, Input::Rechecked { history: fresh, claims }) => {
                self.revalidate(&claims);
                let mut o = self.s.plan.clone();
                o.now = now;
                let (keep, dropped) = revise(std::mem::take(&mut self.sending), &fresh, &o);
                for (id, d) in dropped {
                    tracing::info!(id = %id, decision = ?d, "left to the run that committed it first");
                    match d {
                        Decision::Final => self.report.already_final += 1,
                        Decision::NeedsPerson => {
                            self.report.needs_person += 1;
                            self.report.unknown += 1;
                        }
                        _ => self.report.in_flight_elsewhere += 1,
                    }
                }
                self.sending = keep;
                Ok(self.lease_or_commit(conflicts, now))
            }
            (Stage::Lease { conflicts, then }, Input::Lease { open }) => {
                self.leased = true;
                self.note_lease(&open);
                match then {
                    Some((resolve, send)) => {
                        let resolve = self.hold_back(resolve);
                        let send = self.hold_back(send);
                        Ok(self.look_up(resolve, send))
                    }
                    None => {
                        let sending = std::mem::take(&mut self.sending);
                        self.sending = self.hold_back(sending);
                        Ok(self.commit(conflicts, now))
                    }
                }
            }
            (Stage::Commit { at, .. }, Input::Committed) => {
                self.carried.clear();
                self.from_evidence.clear();
                self.report.log_commits += 1;
                self.mine.extend(self.sending.iter().map(|s| (s.op.id.clone(), s.attempt)));
                Ok(self.after_intents(at, now))
            }
            (Stage::Commit { conflicts, .. }, Input::Conflict) => {
                tracing::info!(
                    ops = self.sending.len(),
                    "another run committed intents meanwhile; reading the log again"
                );
                self.contended = true;
                self.leased = false;
                let conflicts = conflicts + 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(Stuck::Contended { attempts: MAX_CONFLICTS });
                }
                self.stage = Stage::Recheck { conflicts };
                Ok(Effect::Recheck { steps: self.sending.clone(), claims: self.carried_claims() })
            }
            (Stage::Sends { intent_at }, Input::Sent(sent)) => Ok(self.outcomes(sent, intent_at, now)),
            (Stage::ResolveNow, Input::LookedUp(found)) => {
                let run_id = self.s.run_id.clone();
                for (s, f) in found {
                    if matches!(f, Ok(Lookup::Executed { .. })) {
                        // Replaces the unknown event carried for this attempt.
                        self.carried.retain(|c| !(c.operation_id == s.op.id && c.attempt == s.attempt));
                        self.report.unknown -= 1;
                        // Sent by this run: the money it moved is this run's.
                        self.report.usd_moved =
                            self.report.usd_moved.checked_add(s.op.outflow()).unwrap_or(self.report.usd_moved);
                        let e = event(&s, Event::Unknown, &run_id, now);
                        self.record(&s, f, e, true);
                    } else {
                        // Never resent in the run that sent it: the send may still be running at the
                        // provider; what could be confused with it waits too.
                        self.holds.insert(Hold::of(&s));
                    }
                }
                Ok(self.batch_done())
            }
            (Stage::Final { .. }, Input::Committed) => {
                self.carried.clear();
                self.report.log_commits += 1;
                Ok(self.finish())
            }
            (Stage::Final { conflicts }, Input::Conflict) => {
                let conflicts = conflicts + 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(Stuck::Contended { attempts: MAX_CONFLICTS });
                }
                self.stage = Stage::FinalRecheck { conflicts };
                Ok(Effect::Recheck { steps: Vec::new(), claims: self.carried_claims() })
            }
            (Stage::FinalRecheck { conflicts }, Input::Rechecked { claims, .. }) => {
                self.revalidate(&claims);
                self.stage = Stage::Final { conflicts };
                Ok(Effect::CommitOutcomes(self.carried.clone()))
            }
            (Stage::Done, input) => Err(self.protocol("nothing (the run is over)", &input)),
            (stage, input) => {
                let expected = match stage {
                    Stage::Claimed { .. } => "Claimed",
                    Stage::Lookups { .. } | Stage::ResolveNow => "LookedUp",
                    Stage::Recheck { .. } | Stage::FinalRecheck { .. } => "Rechecked",
                    Stage::Lease { .. } => "Lease",
                    Stage::Commit { .. } | Stage::Final { .. } => "Committed or Conflict",
                    Stage::Sends { .. } => "Sent",
                    _ => "Go",
                };
                Err(self.protocol(expected, &input))
            }
        }
    }

    /// Log an earlier attempt's evidence; `this_run`: the attempt was this run's own send.
    fn record(&mut self, s: &Step, found: Result<Lookup, Failure>, e: LogEvent, this_run: bool) {
        match judge(&self.s.caps, s, found, e, &mut self.report) {
            Judged::Send => self.sending.push(s.clone()),
            Judged::Record { event, halt } => {
                if s.op.kind() == OpKind::EscrowCreate
                    && let Some(esc) = &event.escrow_id
                    && event.event == Event::Completed
                {
                    self.created.insert(s.op.id.clone(), esc.clone());
                }
                if halt {
                    self.holds.insert(Hold::of(s));
                }
                if event.event == Event::Completed {
                    self.from_evidence.insert((event.operation_id.clone(), event.attempt));
                }
                debug_assert!(!this_run || event.event == Event::Completed);
                self.carried.push(*event);
            }
        }
    }

    fn start_batch(&mut self, stop_requested: bool, now: DateTime<Utc>) -> Effect {
        self.apply_holds();
        loop {
            let Some(rest) = self.phases.front_mut() else { return self.end() };
            if rest.is_empty() {
                self.phases.pop_front();
                continue;
            }
            if stop_requested {
                // What is left has no intent and is read again by the next run.
                self.report.not_started += rest.len() as u64;
                self.phases.clear();
                return self.end();
            }
            let chunk = next_batch(rest, self.s.batch_size, self.s.caps.ledger_evidence, DEBITS_PER_PAYER_PER_BATCH);
            self.done += chunk.len() as u64;
            let batch = self.bind(chunk);
            let (resolve, send): (Vec<Step>, Vec<Step>) = batch.into_iter().partition(|s| s.resolve_first);
            let payers = payers_of(resolve.iter().chain(&send));
            if !self.s.caps.honours_idempotency_keys && !self.leased && !payers.is_empty() {
                // Before the ledger is read: another process's sends for a payer would be evidence too.
                self.stage = Stage::Lease { conflicts: 0, then: Some((resolve, send)) };
                return Effect::CheckLease { since: now - self.s.plan.in_flight_timeout, payers };
            }
            return self.look_up(resolve, send);
        }
    }

    /// Take what the holds made since the last batch hold back out of the phases still to come (holds only
    /// grow during a run).
    fn apply_holds(&mut self) {
        if self.holds.len() == self.holds_applied {
            return;
        }
        self.holds_applied = self.holds.len();
        for phase in std::mem::take(&mut self.phases) {
            let before = phase.len();
            let keep = self.hold_back(phase.into());
            self.done += (before - keep.len()) as u64;
            self.phases.push_back(keep.into());
        }
    }

    /// Steps that may go on; the others are counted as held (by the lease or by an unknown outcome).
    fn hold_back(&mut self, steps: Vec<Step>) -> Vec<Step> {
        if self.holds.is_empty() {
            return steps;
        }
        let mut keep = Vec::with_capacity(steps.len());
        for s in steps {
            let leased_away = s.payer.as_ref().is_some_and(|p| {
                self.holds.contains(&Hold::EveryPayer) || self.holds.contains(&Hold::Payer(p.clone()))
            });
            if leased_away {
                self.report.in_flight_elsewhere += 1;
            } else if self.holds.contains(&Hold::of(&s)) {
                self.report.held_after_unknown += 1;
            } else {
                keep.push(s);
            }
        }
        keep
    }

    /// The lease's answer: payers with another process's open intents wait for this run's end.
    fn note_lease(&mut self, open: &[OpenIntent]) {
        let others: Vec<&OpenIntent> =
            open.iter().filter(|o| !self.mine.contains(&(o.operation_id.clone(), o.attempt))).collect();
        if let Some(first) = others.first() {
            tracing::warn!(
                open = others.len(),
                first = %first.operation_id,
                "another process is sending for a payer of this run; at a provider without idempotency keys \
                 this run neither judges that payer's ledger nor sends for it until those intents end"
            );
        }
        for o in others {
            self.holds.insert(o.payer.clone().map_or(Hold::EveryPayer, Hold::Payer));
        }
    }

    /// Provider transactions the carried outcomes claim on the provider's evidence (not on its answer).
    fn carried_claims(&self) -> Vec<String> {
        self.carried
            .iter()
            .filter(|e| {
                e.event == Event::Completed && self.from_evidence.contains(&(e.operation_id.clone(), e.attempt))
            })
            .filter_map(|e| e.tx_id.clone())
            .collect()
    }

    /// After a conflict: an outcome taken from evidence whose transaction another operation claimed
    /// meanwhile is not taken; it stays unknown (and holds back what could be confused with it).
    fn revalidate(&mut self, claims: &HashMap<String, Vec<String>>) {
        for e in self.carried.iter_mut() {
            if e.event != Event::Completed || !self.from_evidence.contains(&(e.operation_id.clone(), e.attempt)) {
                continue;
            }
            let Some(t) = e.tx_id.clone() else { continue };
            let Some(other) = claims.get(&t).and_then(|by| by.iter().find(|o| **o != e.operation_id)) else {
                continue;
            };
            tracing::warn!(id = %e.operation_id, tx = %t, other = %other, "the transaction the evidence pointed at was claimed by another operation meanwhile; the outcome stays unknown");
            self.from_evidence.remove(&(e.operation_id.clone(), e.attempt));
            e.event = Event::Unknown;
            e.tx_id = None;
            e.error_code = Some("claimed_by_another".into());
            e.error_message = Some(clip_message(format!(
                "the provider transaction {t} the evidence pointed at is claimed by operation {other}; a later run \
                 looks this operation up again"
            )));
            self.report.completed = self.report.completed.saturating_sub(1);
            self.report.resolved_by_lookup = self.report.resolved_by_lookup.saturating_sub(1);
            self.report.unknown += 1;
            self.holds.insert(Hold::of_event(e));
        }
        if let Some(c) = self.claimed.as_mut() {
            c.extend(claims.keys().cloned());
        }
    }

    /// Releases and disputes naming their create: bind them to the escrow it made, or wait for a later run.
    fn bind(&mut self, chunk: Vec<Step>) -> Vec<Step> {
        let mut out = Vec::with_capacity(chunk.len());
        for mut s in chunk {
            if let Some(EscrowRef::CreatedBy(c)) = s.op.escrow() {
                match self.created.get(c) {
                    Some(e) => s.op.bind_escrow(&e.clone()),
                    None => {
                        self.report.waiting += 1;
                        continue;
                    }
                }
            }
            out.push(s);
        }
        out
    }

    fn look_up(&mut self, resolve: Vec<Step>, send: Vec<Step>) -> Effect {
        if resolve.is_empty() {
            self.stage = Stage::Lookups { send };
            return Effect::LookUp { steps: resolve, one_by_one: self.s.caps.ledger_evidence, of: Attempts::Earlier };
        }
        self.lookups(Stage::Lookups { send }, resolve)
    }

    /// Ask for evidence, then go on in `then`. At a provider resolved from ledgers, one at a time, with the
    /// references logged operations own read first.
    fn lookups(&mut self, then: Stage, steps: Vec<Step>) -> Effect {
        let one_by_one = self.s.caps.ledger_evidence;
        if one_by_one && self.claimed.is_none() {
            self.stage = Stage::Claimed { then: Box::new(then), resolve: steps };
            return Effect::LoadClaimed;
        }
        let of = if matches!(then, Stage::ResolveNow) { Attempts::JustSent } else { Attempts::Earlier };
        self.stage = then;
        Effect::LookUp { steps, one_by_one, of }
    }

    /// Before the intents are committed: the log read again if another run committed meanwhile, then the
    /// lease.
    fn before_intents(&mut self, conflicts: u32, now: DateTime<Utc>) -> Effect {
        if self.contended && !self.sending.is_empty() {
            self.stage = Stage::Recheck { conflicts };
            return Effect::Recheck { steps: self.sending.clone(), claims: self.carried_claims() };
        }
        self.lease_or_commit(conflicts, now)
    }

    fn lease_or_commit(&mut self, conflicts: u32, now: DateTime<Utc>) -> Effect {
        let payers = payers_of(&self.sending);
        if !payers.is_empty() && !self.s.caps.honours_idempotency_keys && !self.leased {
            self.stage = Stage::Lease { conflicts, then: None };
            return Effect::CheckLease { since: now - self.s.plan.in_flight_timeout, payers };
        }
        self.commit(conflicts, now)
    }

    fn commit(&mut self, conflicts: u32, now: DateTime<Utc>) -> Effect {
        if self.sending.is_empty() {
            // Nothing to send: the carried outcomes wait for the next commit.
            return self.after_intents(now, now);
        }
        let mut events = self.carried.clone();
        events.extend(self.sending.iter().map(|s| event(s, Event::Intent, &self.s.run_id, now)));
        self.stage = Stage::Commit { at: now, conflicts };
        Effect::CommitIntents { events, at: now }
    }

    /// Intents committed at `intent_at` (or nothing to send): pace, then send. No send starts so late
    /// that another run could already take its intent for abandoned (see `PayoutOptions::send_budget`).
    fn after_intents(&mut self, intent_at: DateTime<Utc>, now: DateTime<Utc>) -> Effect {
        let pace = pace(&self.s.caps, !self.sending.is_empty(), self.last_sends, now);
        let latest_start = intent_at + self.s.plan.in_flight_timeout - self.s.send_budget;
        self.stage = Stage::Sends { intent_at };
        Effect::Send { steps: std::mem::take(&mut self.sending), pace, latest_start }
    }

    fn outcomes(
        &mut self,
        sent: Vec<(Step, Option<Result<Receipt, Failure>>)>,
        intent_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Effect {
        if self.s.caps.ledger_evidence && !sent.is_empty() {
            self.last_sends = Some(now);
        }
        let mut ambiguous: Vec<Step> = Vec::new();
        for (s, result) in sent {
            let mut e = event(&s, Event::Completed, &self.s.run_id, now);
            match result {
                None => {
                    // Intent committed, never sent: the intent stays open and a later run looks it up.
                    tracing::warn!(id = %s.op.id, "not sent: too late after its intent; left for a later run");
                    self.report.unknown += 1;
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
                    self.report.completed += 1;
                    if receipt.replayed {
                        self.report.replayed += 1;
                    } else {
                        self.report.usd_moved =
                            self.report.usd_moved.checked_add(s.op.outflow()).unwrap_or(self.report.usd_moved);
                    }
                }
                Some(Err(f)) => {
                    self.key_refused |= f.key_refused;
                    e.event = f.outcome.event;
                    e.http_status = f.outcome.http_status;
                    e.error_code = Some(f.outcome.code);
                    e.error_message = Some(f.outcome.message);
                    if e.event == Event::Rejected {
                        self.report.rejected_by_api += 1
                    } else {
                        self.report.unknown += 1;
                        if self.s.caps.ledger_evidence && !self.key_refused {
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
        if ambiguous.is_empty() {
            return self.batch_done();
        }
        // At a provider without key memory, an ambiguous failure is resolved from the payer's ledger before
        // anything else is sent; what stays unknown stops this run's sending.
        self.lookups(Stage::ResolveNow, ambiguous)
    }

    fn batch_done(&mut self) -> Effect {
        self.stage = Stage::BatchDone;
        if self.key_refused {
            // No further batch: the rest is read again by the next run.
            self.phases.clear();
        }
        Effect::BatchDone { copy_ledgers: self.s.copy_ledgers, done: self.done, total: self.total }
    }

    fn end(&mut self) -> Effect {
        if self.carried.is_empty() {
            return self.finish();
        }
        self.stage = Stage::Final { conflicts: 0 };
        Effect::CommitOutcomes(self.carried.clone())
    }

    fn finish(&mut self) -> Effect {
        self.stage = Stage::Done;
        Effect::Done { key_refused: self.key_refused }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Usd;
    use crate::operation::{Action, Operation};
    use crate::payouts::judgement::may_start;
    use crate::payouts::state::FailedOutcome;
    use crate::payouts::state::{Status, status};
    use crate::provider::Evidence;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn ledger_caps() -> Capabilities {
        Capabilities { ledger_evidence: true, ..Capabilities::default() }
    }

    fn keyed_caps() -> Capabilities {
        Capabilities { honours_idempotency_keys: true, lookup_by_key: true, ..Capabilities::default() }
    }

    fn payout(id: &str, cents: i64) -> Operation {
        Operation {
            id: id.into(),
            action: Action::Payout { agent: format!("agent-{id}"), amount: Usd::from_cents(cents).unwrap() },
            reason: "r".into(),
            requested_at: None,
        }
    }

    fn plan_options(caps: &Capabilities, now: DateTime<Utc>) -> PlanOptions {
        crate::payouts::plan::test_options(caps.can_resolve(), now)
    }

    fn failure(event: Event) -> Failure {
        Failure {
            outcome: FailedOutcome { event, http_status: Some(502), code: "internal".into(), message: "m".into() },
            key_refused: false,
        }
    }

    #[test]
    fn pacing_keeps_ledger_batches_a_second_apart_and_nothing_else_waits() {
        let t = t0();
        let after = |ms| t + chrono::Duration::milliseconds(ms);
        assert_eq!(pace(&ledger_caps(), true, Some(t), after(300)), Duration::from_millis(750));
        assert_eq!(pace(&ledger_caps(), true, Some(t), after(2_000)), Duration::ZERO);
        assert_eq!(pace(&ledger_caps(), false, Some(t), after(300)), Duration::ZERO, "nothing to send");
        assert_eq!(pace(&ledger_caps(), true, None, after(300)), Duration::ZERO, "first batch");
        assert_eq!(pace(&keyed_caps(), true, Some(t), after(300)), Duration::ZERO, "keys: no ledger to keep apart");
        assert!(may_start(t, t) && !may_start(after(1), t));
    }

    #[test]
    fn only_evidence_that_it_never_ran_allows_a_send_and_doubt_halts_a_ledger_run() {
        let op = payout("p", 100);
        let step = Step {
            key: op.idempotency_key("t").unwrap(),
            op,
            attempt: 2,
            resolve_first: true,
            since: Some(t0()),
            last_error: None,
            payer: None,
            escrow_tag: None,
            legacy_escrow_tag: false,
        };
        let e = || event(&step, Event::Unknown, "run", t0());
        let mut r = PayoutReport::default();
        assert_eq!(judge(&ledger_caps(), &step, Ok(Lookup::NotExecuted), e(), &mut r), Judged::Send);
        let cases = [
            (Ok(Lookup::Pending { why: "w".into() }), Some("lookup_pending"), true),
            (Ok(Lookup::Inconclusive { why: "w".into() }), Some("lookup_inconclusive"), true),
            (Err(failure(Event::Unknown)), Some("lookup_failed"), true),
        ];
        for (found, code, halts) in cases {
            let Judged::Record { event, halt } = judge(&ledger_caps(), &step, found.clone(), e(), &mut r) else {
                panic!("{found:?} allowed a send")
            };
            assert_eq!((event.event, event.error_code.as_deref(), halt), (Event::Unknown, code, halts), "{found:?}");
            // A provider with keys keeps going: its evidence about one operation says nothing of another's.
            let Judged::Record { halt, .. } = judge(&keyed_caps(), &step, found, e(), &mut r) else { panic!() };
            assert!(!halt);
        }
        let found = Ok(Lookup::Executed {
            tx_id: Some("tx".into()),
            escrow_id: None,
            duplicates: 1,
            evidence: Evidence::Ledger,
        });
        let Judged::Record { event, halt } = judge(&ledger_caps(), &step, found, e(), &mut r) else { panic!() };
        assert_eq!((event.event, event.tx_id.as_deref(), halt), (Event::Completed, Some("tx"), false));
        assert_eq!((r.completed, r.resolved_by_lookup, r.resolved_from_ledger, r.needs_person), (1, 1, 1, 2));
    }

    /// A provider as the engine meets it, in memory: each send may run or not, and answer or not;
    /// lookups tell the truth once a send can no longer be running, and may fail or doubt before that.
    #[derive(Default)]
    struct World {
        log: Vec<LogEvent>,
        /// Times each operation ran at the provider.
        ran: HashMap<String, u32>,
        tx: u64,
        /// The payer's debits, oldest first (every one a `payment_sent` of the amount that ran).
        ledger: Vec<crate::provider::LedgerEntry>,
        /// Which operation each provider transaction paid.
        paid: HashMap<String, String>,
    }

    impl World {
        fn history(&self) -> HashMap<String, Vec<LogEvent>> {
            let mut h: HashMap<String, Vec<LogEvent>> = HashMap::new();
            for e in &self.log {
                h.entry(e.operation_id.clone()).or_default().push(e.clone());
            }
            h
        }
    }

    /// One run, killed after `kill_after` effects (if given). Returns the report if it finished.
    fn run(
        w: &mut World,
        ops: &[Operation],
        caps: Capabilities,
        now: &mut DateTime<Utc>,
        rng: &mut crate::rng::SplitMix64,
        kill_after: Option<u32>,
        run_id: &str,
    ) -> Option<PayoutReport> {
        let o = plan_options(&caps, *now);
        let plan = crate::payouts::plan::plan(ops.to_vec(), &w.history(), &o).unwrap();
        let settings = Settings {
            caps,
            plan: o,
            run_id: run_id.into(),
            batch_size: 3,
            send_budget: chrono::Duration::seconds(60),
            copy_ledgers: false,
        };
        let mut ex = Execution::new(plan, settings, PayoutReport::default());
        let mut input = Input::Go;
        let mut effects = 0u32;
        loop {
            *now += chrono::Duration::milliseconds(200);
            let effect = ex.next(input, *now, false).expect("the protocol holds");
            effects += 1;
            if kill_after.is_some_and(|k| effects > k) {
                return None;
            }
            input = match effect {
                Effect::LoadClaimed => Input::Claimed(
                    w.log.iter().filter(|e| e.event == Event::Completed).filter_map(|e| e.tx_id.clone()).collect(),
                ),
                Effect::LookUp { steps, .. } => Input::LookedUp(
                    steps
                        .into_iter()
                        .map(|s| {
                            // The provider's evidence as the live provider reads it: the payer's ledger of
                            // debits, judged by amount and time, less what logged operations claim.
                            let found = if rng.next_u64().is_multiple_of(5) {
                                Err(failure(Event::Unknown))
                            } else {
                                let ctx = crate::provider::LookupContext {
                                    since: s.since,
                                    claimed: ex.claimed(),
                                    last_error: None,
                                    now: *now,
                                    settle: ex.settle(),
                                    copied: &[],
                                    copied_from_origin: false,
                                    legacy_escrow_tag: false,
                                };
                                let amount = crate::micros::Micros::from_usd(s.op.amount().unwrap());
                                let newest_first: Vec<_> = w.ledger.iter().rev().cloned().collect();
                                Ok(crate::provider::live::evidence::judge_payment(
                                    &newest_first,
                                    None,
                                    amount,
                                    &ctx,
                                    30,
                                ))
                            };
                            ex.note_lookup(&found);
                            (s, found)
                        })
                        .collect(),
                ),
                Effect::Recheck { claims, .. } => {
                    let mut by: HashMap<String, Vec<String>> = HashMap::new();
                    for e in w.log.iter().filter(|e| e.event == Event::Completed) {
                        if let Some(t) = e.tx_id.as_ref().filter(|t| claims.contains(t)) {
                            by.entry(t.clone()).or_default().push(e.operation_id.clone());
                        }
                    }
                    Input::Rechecked { history: w.history(), claims: by }
                }
                Effect::CheckLease { since, payers } => {
                    // Every open intent of these payers, this process's own included: the execution knows
                    // its own.
                    let open = w
                        .history()
                        .into_iter()
                        .filter_map(|(id, ev)| match status(&ev) {
                            Status::InFlight { attempt } => Some((id, attempt, ev)),
                            _ => None,
                        })
                        .filter_map(|(id, attempt, ev)| {
                            let intent = ev.iter().find(|e| e.event == Event::Intent && e.attempt == attempt)?;
                            let payer = intent.payer_agent_id.clone();
                            let mine = payer.as_ref().is_none_or(|p| payers.contains(p));
                            (intent.recorded_at > since && mine).then_some(OpenIntent {
                                operation_id: id,
                                attempt,
                                payer,
                            })
                        })
                        .collect();
                    Input::Lease { open }
                }
                Effect::CommitIntents { events, .. } | Effect::CommitOutcomes(events) => {
                    w.log.extend(events);
                    Input::Committed
                }
                Effect::Send { steps, pace, latest_start } => {
                    *now += chrono::Duration::from_std(pace).unwrap();
                    let mut out = Vec::new();
                    for s in steps {
                        if !may_start(*now, latest_start) {
                            out.push((s, None));
                            continue;
                        }
                        // 0: ran and answered; 1: ran, answer lost; 2: never ran, unknown; 3: refused.
                        let r = match rng.next_u64() % 4 {
                            0 | 1 => {
                                *w.ran.entry(s.op.id.clone()).or_default() += 1;
                                w.tx += 1;
                                let tx_id = format!("tx-{}", w.tx);
                                w.paid.insert(tx_id.clone(), s.op.id.clone());
                                w.ledger.push(crate::provider::LedgerEntry {
                                    id: format!("e-{}", w.tx),
                                    agent_id: "payer".into(),
                                    kind: "debit".into(),
                                    amount: crate::micros::Micros::from_usd(s.op.amount().unwrap()),
                                    balance_after: crate::micros::Micros::ZERO,
                                    reason: "payment_sent".into(),
                                    reference: Some(tx_id.clone()),
                                    service: None,
                                    created_at: now.timestamp(),
                                });
                                if rng.next_u64().is_multiple_of(2) {
                                    Ok(Receipt { tx_id: Some(tx_id), ..Receipt::default() })
                                } else {
                                    Err(failure(Event::Unknown))
                                }
                            }
                            2 => Err(failure(Event::Unknown)),
                            _ => Err(failure(Event::Rejected)),
                        };
                        out.push((s, Some(r)));
                    }
                    Input::Sent(out)
                }
                Effect::BatchDone { .. } => Input::Go,
                Effect::Done { .. } => return Some(ex.into_report()),
            };
        }
    }

    proptest! {
        /// At a provider without idempotency keys, whatever the answers and wherever runs are killed, no
        /// operation runs twice and none is recorded with another's transaction (every amount is shared by
        /// two operations: the ledger cannot tell them apart by amount); and once runs stop being killed and
        /// time passes, every operation ends final, never lost.
        #[test]
        fn killed_and_rerun_nothing_runs_twice_and_nothing_is_lost(
            seed in any::<u64>(),
            n in 1usize..12,
            kills in proptest::collection::vec(1u32..40, 0..6),
        ) {
            let mut rng = crate::rng::SplitMix64::new(seed);
            let ops: Vec<Operation> = (0..n).map(|i| payout(&format!("p{i}"), 100 + (i / 2) as i64)).collect();
            let mut w = World::default();
            let mut now = t0();
            for (i, k) in kills.iter().enumerate() {
                run(&mut w, &ops, ledger_caps(), &mut now, &mut rng, Some(*k), &format!("killed-{i}"));
                // The next run starts past the in-flight timeout of the killed one.
                now += chrono::Duration::minutes(16);
            }
            for i in 0..60 {
                run(&mut w, &ops, ledger_caps(), &mut now, &mut rng, None, &format!("rerun-{i}"));
                now += chrono::Duration::minutes(16);
            }
            for op in &ops {
                let ran = w.ran.get(&op.id).copied().unwrap_or(0);
                prop_assert!(ran <= 1, "{} ran {ran} times (seed {seed})", op.id);
                let h = w.history();
                let st = h.get(&op.id).map(|e| status(e)).unwrap_or(Status::New);
                prop_assert!(st.is_final(), "{} ended {st:?} (seed {seed})", op.id);
                if matches!(st, Status::Completed { .. }) {
                    prop_assert_eq!(ran, 1, "{} completed without running (seed {})", op.id, seed);
                    let tx = h[&op.id].iter().rev().find_map(|e| (e.event == Event::Completed).then(|| e.tx_id.clone()));
                    let paid = tx.flatten().and_then(|t| w.paid.get(&t).cloned());
                    prop_assert_eq!(paid.as_deref(), Some(op.id.as_str()), "{} recorded another's payment (seed {})", op.id, seed);
                } else {
                    prop_assert_eq!(ran, 0, "{} rejected after running (seed {})", op.id, seed);
                }
            }
        }
    }
}
