//! Payouts and escrow actions from Delta tables, executed exactly once, every step in an append-only log.
//!
//! Read -> plan -> execute, one module each:
//! - `read.rs`: the sources (one seam, `source.rs`), validation into typed operations (`validate.rs`,
//!   `operation.rs`), and the log history of those operations (`log.rs`);
//! - `plan.rs`: a pure function from operations + history + options to what to look up, send or hold;
//! - `execution.rs`: a pure state machine that carries the plan out batch by batch: intents committed
//!   before money moves, outcomes after, unknown outcomes resolved only from the provider's evidence;
//!   `judgement.rs` holds its rules for one step at a time (what evidence means, what waits, pacing);
//! - `executor.rs`: the I/O that performs what the execution says, against a
//!   [`Provider`](crate::provider::Provider), the log and the injected [`Clock`](crate::clock::Clock);
//!   `ledger_copy.rs` refreshes and reads the payers' ledger copy for it.
//!
//! The exactly-once argument, in full:
//! - one idempotency key per operation, from namespace + kind + id only (`operation.rs`);
//! - an operation is sent only by a run that committed its intent, and the commit of intents carries the
//!   namespace's Delta application transaction, so two runs that read the log at once cannot both commit
//!   intents for it: the second conflicts, re-reads and drops it (`execution.rs`, `plan::revise`);
//! - an intent without an outcome is left alone while its run may still be sending (`plan::decide`); the
//!   sender never starts a send that late (`judgement::may_start`);
//! - after that, or after an unknown outcome, the provider is asked; "never executed" is concluded only
//!   from evidence that proves it (a successful answer with zero rows for the key, or a ledger window that
//!   covers the time since the intent: `provider::Provider::lookup`);
//!   anything else leaves the operation unknown for a person, never resent;
//! - the HTTP client repeats a POST after an ambiguous failure only at a provider that declares it
//!   honours idempotency keys (`http::client`, the rule derived from `provider::Capabilities`).
//!
//! Rows that cannot be paid are refused before any money moves, with a code, into the rejects table.

pub mod event;
pub mod execution;
pub mod executor;
pub mod feed;
pub mod judgement;
mod ledger_copy;
pub mod log;
pub mod plan;
pub mod read;
pub mod requested;
pub mod resolve;
pub mod rules;
pub mod sightings;
pub mod source;
pub mod state;
pub mod validate;
pub mod waiting;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::errors::ErrorClass;
use crate::money::Usd;
use crate::progress::Progress;
use crate::provider::{Provider, ProviderError, RefusalCode};
use crate::tables::{CommitInfo, TableError, Warehouse};

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error("{0}")]
    Config(String),
    #[error("payout source {source_name}: {message}")]
    Source { source_name: String, message: String },
    #[error("payout source {source_name}: the query failed")]
    SourceQuery {
        source_name: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing {table} failed")]
    Write {
        table: &'static str,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error("{what} failed")]
    Query {
        what: &'static str,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("a payout log row cannot be read: {0}")]
    LogRow(String),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("another run kept committing intents for this namespace; {attempts} commits conflicted")]
    Contended { attempts: u32 },
    #[error("building a batch failed")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A row of a table pfsync owns that cannot be encoded or decoded (named with its table and key).
    #[error(transparent)]
    Row(#[from] crate::tables::row::RowError),
    #[error(transparent)]
    Mlflow(#[from] crate::mlflow::MlflowError),
}

impl PayoutError {
    pub(crate) fn write(table: &'static str, source: deltalake::DeltaTableError) -> PayoutError {
        PayoutError::Write { table, source: Box::new(source) }
    }

    pub(crate) fn query(what: &'static str) -> impl FnOnce(datafusion::error::DataFusionError) -> PayoutError {
        move |source| PayoutError::Query { what, source }
    }

    /// What kind of failure this is; the exit code follows from it alone.
    pub fn class(&self) -> ErrorClass {
        match self {
            PayoutError::Config(_) | PayoutError::Source { .. } | PayoutError::SourceQuery { .. } => ErrorClass::Usage,
            PayoutError::Provider(e) => e.class(),
            PayoutError::Table(e) => e.class(),
            PayoutError::Write { .. }
            | PayoutError::Query { .. }
            | PayoutError::LogRow(_)
            | PayoutError::Row(_)
            | PayoutError::Contended { .. } => ErrorClass::Storage,
            PayoutError::Plan(_) | PayoutError::Arrow(_) => ErrorClass::Internal,
            PayoutError::Mlflow(crate::mlflow::MlflowError::Request { .. }) => ErrorClass::Transient,
            PayoutError::Mlflow(_) => ErrorClass::Usage,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PayoutOptions {
    /// Part of every idempotency key: separates environments sharing one provider account.
    pub namespace: String,
    /// Operations per log commit (intents, with the previous batch's outcomes).
    pub batch_size: usize,
    /// Sends in flight at once (the client's own limits apply too).
    pub concurrency: usize,
    /// Safety brake: stop before new payouts and escrow funding in this run exceed this total.
    pub max_total: Option<Usd>,
    /// Safety brake: stop before more than this many new operations are sent in this run.
    pub max_count: Option<u64>,
    /// Validate and print the plan; write nothing, send nothing.
    pub dry_run: bool,
    /// Source query for payouts (default: the pending table).
    pub payout_sql: Option<String>,
    /// Source query for escrow actions (default: the actions table).
    pub action_sql: Option<String>,
    /// Refuse agents the wallets table does not list (when that table exists).
    pub check_agents: bool,
    /// Only operations whose id hashes to this shard (for parallel tasks).
    pub shard: Option<plan::Shard>,
    /// More Delta tables for the source queries: `(name, location)`.
    pub extra_tables: Vec<(String, url::Url)>,
    /// An intent younger than this may belong to a run still sending it: other runs leave it alone.
    pub in_flight_timeout: Duration,
    /// The longest one send can take, retries included (from the client's settings). No send starts
    /// later than `in_flight_timeout - send_budget` after its intent, so a run that finds an intent older
    /// than the timeout knows its sender has stopped.
    pub send_budget: Duration,
    /// Read the metric rules (`purpleflea.escrow.rules`) instead of the payout and action sources.
    pub rules: Option<std::sync::Arc<rules::Rules>>,
    /// Change-feed sources (`[[feeds]]`), read with the payout and action sources.
    pub feeds: Vec<feed::FeedSpec>,
    /// Where the time comes from (the machine's clock, or a test's).
    pub clock: Arc<dyn Clock>,
}

impl Default for PayoutOptions {
    fn default() -> Self {
        PayoutOptions {
            namespace: "default".into(),
            batch_size: 2000,
            concurrency: 64,
            max_total: None,
            max_count: None,
            dry_run: false,
            payout_sql: None,
            action_sql: None,
            check_agents: true,
            shard: None,
            extra_tables: Vec::new(),
            in_flight_timeout: Duration::from_secs(900),
            send_budget: Duration::from_secs(150),
            rules: None,
            feeds: Vec::new(),
            clock: Arc::new(crate::clock::SystemClock),
        }
    }
}

impl PayoutOptions {
    /// Checks that need no table or network; run where the options are parsed.
    pub fn check(&self) -> Result<(), PayoutError> {
        check_namespace(&self.namespace)?;
        if self.in_flight_timeout < self.send_budget.saturating_mul(2) {
            return Err(PayoutError::Config(format!(
                "--in-flight-timeout {}s must be at least twice the longest send ({}s: the API timeout plus \
                 max elapsed retry time); raise it or lower [api] timeout_secs / max_elapsed_secs",
                self.in_flight_timeout.as_secs(),
                self.send_budget.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// What the plan needs of these options, the provider's capabilities and the time.
    pub fn plan_options(
        &self,
        caps: crate::provider::Capabilities,
        now: chrono::DateTime<chrono::Utc>,
    ) -> plan::PlanOptions {
        plan::PlanOptions {
            namespace: self.namespace.clone(),
            shard: self.shard,
            max_total: self.max_total,
            max_count: self.max_count,
            in_flight_timeout: chrono::Duration::from_std(self.in_flight_timeout).unwrap_or(chrono::Duration::MAX),
            can_look_up: caps.can_resolve(),
            now,
        }
    }
}

/// Read, plan, execute. Everything before the first log commit touches no money.
pub async fn run_payouts(
    provider: &dyn Provider,
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &PayoutOptions,
    progress: &Progress,
) -> Result<PayoutReport, PayoutError> {
    let mut report = PayoutReport { run_id: commit.run_id.clone(), dry_run: opts.dry_run, ..PayoutReport::default() };
    let caps = provider.capabilities();
    // A payee the wallets table does not list is refused only where that table lists every agent.
    let opts = &PayoutOptions { check_agents: opts.check_agents && caps.wallets_list_every_agent, ..opts.clone() };
    let mut read = read::read(wh, commit, opts, &mut report).await?;
    // What this provider can never carry out as configured is refused before anything moves.
    let mut ok = Vec::with_capacity(read.ops.len());
    for op in read.ops {
        let Some(r) = provider.refuse(&op) else {
            ok.push(op);
            continue;
        };
        let code = match r.code {
            RefusalCode::AgentKeyNotHeld => validate::RejectCode::AgentKeyNotHeld,
            RefusalCode::InvalidTimeoutHours => validate::RejectCode::InvalidTimeoutHours,
        };
        report.rejected_rows += 1;
        read.rejects.push(validate::Reject {
            operation_id: Some(op.id.clone()),
            kind: validate::RowKind::Op(op.kind()),
            code,
            message: r.message,
            source_row: validate::clip_marked(&format!("{op:?}"), validate::MAX_SOURCE_ROW_BYTES),
        });
    }
    read.ops = ok;
    // A feed's rows that were refused are in the rejects table: its position waits only for the rest.
    let kept: std::collections::HashSet<&str> = read.ops.iter().map(|o| o.id.as_str()).collect();
    for f in &mut read.feeds {
        f.op_ids.retain(|id| kept.contains(id.as_str()));
    }
    // A refusal is recorded once per version of its row: what an earlier run recorded is only counted.
    let before = match &read.rejects_table {
        Some(t) => log::recorded_rejects(t, &read.rejects).await?,
        None => Default::default(),
    };
    let mut seen = std::collections::HashSet::new();
    let (mut known, mut new) = (Vec::new(), Vec::new());
    for r in read.rejects {
        let version = log::RejectVersion::of(&r);
        if before.contains(&version) {
            known.push(r);
        } else if seen.insert(version) {
            // Two identical rows of one run are one version: recorded once.
            new.push(r);
        }
    }
    report.refused_before = known.len() as u64;
    for r in &new {
        tracing::warn!(id = r.operation_id.as_deref().unwrap_or("-"), code = r.code.as_str(), "refused: {}", r.message);
    }
    if !known.is_empty() {
        tracing::info!(
            rows = known.len(),
            first = known[0].operation_id.as_deref().unwrap_or("-"),
            "refused before and unchanged since (in purpleflea.payouts.rejects): not recorded again; fix or remove \
             the source row to clear it"
        );
    }
    read.rejects = new;
    let plan_opts = opts.plan_options(caps, opts.clock.now());
    let mut plan = plan::plan(read.ops, &read.history, &plan_opts)?;
    for s in plan.first.iter_mut().chain(plan.second.iter_mut()) {
        s.payer = provider.payer_of(&s.op);
        s.escrow_tag = provider.escrow_tag(&s.op, &s.key);
    }
    report.note_plan(&plan);
    progress.start(plan.steps().count() as u64);
    if opts.dry_run {
        report.plan = plan.steps().map(Planned::from).collect();
        return Ok(report);
    }
    let (Some(log), Some(rejects)) = (read.log, read.rejects_table) else {
        return Err(PayoutError::Config("the payout log or rejects table could not be opened".into()));
    };
    log::append_rejects(rejects, &read.rejects, commit, opts.clock.now()).await?;
    // A sharded run never moves a feed (the other shards' operations are not its to see).
    let feeds = if opts.shard.is_none() { read.feeds.clone() } else { Vec::new() };
    let settings = execution::Settings {
        caps,
        plan: plan_opts,
        run_id: commit.run_id.clone(),
        batch_size: opts.batch_size,
        send_budget: chrono::Duration::from_std(opts.send_budget).unwrap_or(chrono::Duration::MAX),
        copy_ledgers: provider.held_agents().is_some(),
    };
    let report = executor::Executor::new(provider, log, commit, opts)
        .with_feeds(feeds)
        .with_warehouse(wh)
        .run(execution::Execution::new(plan, settings, report), progress)
        .await?;
    // A feed's next read moves past what it read only when everything it yielded is final in the log.
    if opts.shard.is_none() {
        for f in &read.feeds {
            log::store_feed_position(wh, commit, f).await?;
        }
    }
    Ok(report)
}

/// Namespaces are part of keys and table values: short, lowercase, no separators.
pub fn check_namespace(ns: &str) -> Result<(), PayoutError> {
    let ok = !ns.is_empty()
        && ns.len() <= 32
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PayoutError::Config(format!("--namespace {ns:?} must be 1..=32 characters of a-z, 0-9, _ and -")))
    }
}

/// One planned send, for `--dry-run`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub operation_id: String,
    pub kind: crate::operation::OpKind,
    pub agent_id: Option<String>,
    pub amount: Option<Usd>,
    pub resolve_first: bool,
}

impl From<&plan::Step> for Planned {
    fn from(s: &plan::Step) -> Planned {
        Planned {
            operation_id: s.op.id.clone(),
            kind: s.op.kind(),
            agent_id: s.op.agent_id().map(str::to_string),
            amount: s.op.amount(),
            resolve_first: s.resolve_first,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PayoutReport {
    pub run_id: String,
    pub source_rows: u64,
    /// Refused by validation (into the rejects table).
    pub rejected_rows: u64,
    /// Of `rejected_rows`: refused the same way by an earlier run, the row unchanged since; recorded then,
    /// not again (and no reason to exit 5 again).
    pub refused_before: u64,
    /// Already completed or rejected in an earlier run.
    pub already_final: u64,
    pub completed: u64,
    /// Of `completed`: found at the provider by key lookup or in its ledger, not sent again.
    pub resolved_by_lookup: u64,
    /// Of `resolved_by_lookup`: from the payer's ledger or an escrow's state (a provider without keys).
    pub resolved_from_ledger: u64,
    /// Escrow actions that ran after the escrow's `auto_release_at` (the provider may refund it first).
    pub past_auto_release: u64,
    pub rejected_by_api: u64,
    /// Outcome still not known (resolved on the next run, or by a person; see `needs_person`).
    pub unknown: u64,
    /// Of `unknown`: at a provider that cannot look outcomes up, or where its evidence was inconclusive.
    pub needs_person: u64,
    /// Intents of another run that may still be sending them: left alone (retried after the timeout).
    pub in_flight_elsewhere: u64,
    /// Of `completed`: answered from the provider's idempotency memory (moved no money in this run).
    pub replayed: u64,
    /// Releases/disputes whose create has not completed yet.
    pub waiting: u64,
    /// Not sent: an earlier outcome of this run stayed unknown at a provider without key memory, so the
    /// run stopped sending (the next run resolves it from the ledger first).
    pub held_after_unknown: u64,
    /// Debits on a payer's ledger (copied at the run's start, the last day of it) that no logged operation
    /// claims and no open unknown explains: the payer is used outside pfsync, or a request ran late. Each is
    /// a finding of reconcile (`unlogged_at_provider`).
    pub unclaimed_debits: u64,
    /// Not sent because the safety brake would have been exceeded.
    pub held_by_brake: u64,
    /// Not started because a stop was requested (SIGTERM in `run --follow`): read again by the next run.
    pub not_started: u64,
    /// Paid out or locked into escrow by sends of this run.
    pub usd_moved: Usd,
    pub log_commits: u64,
    pub dry_run: bool,
    pub plan: Vec<Planned>,
}

impl PayoutReport {
    fn note_plan(&mut self, p: &plan::Plan) {
        self.already_final += p.already_final;
        self.in_flight_elsewhere += p.in_flight_elsewhere.len() as u64;
        self.needs_person += p.needs_person.len() as u64;
        self.unknown += p.needs_person.len() as u64;
        self.held_by_brake += p.held_by_brake.len() as u64;
        if !p.held_by_brake.is_empty() {
            tracing::warn!(
                held = p.held_by_brake.len(),
                "safety brake: operations held back to stay within --max-total-usd / --max-count"
            );
        }
        for id in &p.needs_person {
            tracing::warn!(id = %id, "outcome unknown at a provider that cannot look it up: needs a person, never resent");
        }
    }
}

impl fmt::Display for PayoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            return write!(
                f,
                "dry run {}: {} rows, {} would be sent, {} refused by validation ({} of them before), {} already final, {} held by the brake; nothing written or sent",
                self.run_id,
                self.source_rows,
                self.plan.len(),
                self.rejected_rows,
                self.refused_before,
                self.already_final,
                self.held_by_brake
            );
        }
        write!(
            f,
            "payouts {}: {} rows; completed {} (of which {} found by lookup, {} from the ledger), rejected by API {}, refused by validation {} ({} of them before), \
             unknown {} ({} for a person), in flight elsewhere {}, held after an unknown or a busy namespace {}, waiting {}, \
             held by brake {}, already final {}; \
             moved {} USD in {} log commits",
            self.run_id,
            self.source_rows,
            self.completed,
            self.resolved_by_lookup,
            self.resolved_from_ledger,
            self.rejected_by_api,
            self.rejected_rows,
            self.refused_before,
            self.unknown,
            self.needs_person,
            self.in_flight_elsewhere,
            self.held_after_unknown,
            self.waiting,
            self.held_by_brake,
            self.already_final,
            self.usd_moved,
            self.log_commits
        )?;
        if self.unclaimed_debits > 0 {
            write!(
                f,
                "; {} debit(s) on a payer's ledger claimed by no operation (used outside pfsync?)",
                self.unclaimed_debits
            )?;
        }
        Ok(())
    }
}
