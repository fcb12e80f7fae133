//! Payouts and escrow actions from Delta tables, executed exactly once, every step in an append-only log.
//!
//! The guarantee, and where each part of it lives:
//! - one idempotency key per operation, derived from namespace + kind + id only (`operation.rs`);
//! - intent rows committed to the log *before* the batch is sent, outcomes after (`engine.rs`);
//! - an operation whose outcome is not known (a crash after the intent, a timeout, a 5xx) is resolved on the
//!   next attempt by looking its key up at the provider, and resent only when the provider has no
//!   transaction for it, always with the same key (`state.rs`, `engine.rs`);
//! - rows that cannot be paid are refused before any money moves, with a code, into the rejects table
//!   (`validate.rs`).

pub mod engine;
pub mod log;
pub mod operation;
pub mod source;
pub mod state;
pub mod validate;

use std::fmt;

use crate::api::ApiError;
use crate::money::Usd;
use crate::tables::TableError;

pub use engine::run_payouts;

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error("{0}")]
    Config(String),
    #[error("payout source: {0}")]
    Source(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing {table} failed: {source}")]
    Write { table: &'static str, source: Box<deltalake::DeltaTableError> },
    #[error("query failed: {0}")]
    Query(String),
    #[error("building a batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl PayoutError {
    pub(crate) fn write(table: &'static str, source: deltalake::DeltaTableError) -> PayoutError {
        PayoutError::Write { table, source: Box::new(source) }
    }
}

/// Where the engine may stop on purpose so a test can kill the process there (`PFSYNC_PAUSE_AT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// Intents committed, nothing sent.
    AfterIntents,
    /// Everything sent and answered, outcomes not yet committed.
    AfterSend,
}

impl PausePoint {
    pub fn parse(s: &str) -> Option<PausePoint> {
        match s {
            "after_intents" => Some(PausePoint::AfterIntents),
            "after_send" => Some(PausePoint::AfterSend),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PayoutOptions {
    /// Part of every idempotency key: separates environments sharing one provider account.
    pub namespace: String,
    /// Operations per log commit pair (intents, then outcomes).
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
    /// Only operations whose id hashes to shard `index` of `count` (for parallel tasks).
    pub shard: Option<(u32, u32)>,
    /// More Delta tables for the source queries: `(name, location)`.
    pub extra_tables: Vec<(String, url::Url)>,
    pub pause_at: Option<PausePoint>,
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
            pause_at: None,
        }
    }
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
    pub kind: &'static str,
    pub agent_id: Option<String>,
    pub amount: Option<Usd>,
    pub resolve_first: bool,
}

#[derive(Debug, Clone, Default)]
pub struct PayoutReport {
    pub run_id: String,
    pub source_rows: u64,
    /// Refused by validation (into the rejects table).
    pub rejected_rows: u64,
    /// Already completed or rejected in an earlier run.
    pub already_final: u64,
    pub completed: u64,
    /// Of `completed`: found at the provider by key lookup, not sent again.
    pub resolved_by_lookup: u64,
    pub rejected_by_api: u64,
    /// Outcome still not known (resolved on the next run).
    pub unknown: u64,
    /// Releases/disputes whose create has not completed yet.
    pub waiting: u64,
    /// Not sent because the safety brake would have been exceeded.
    pub held_by_brake: u64,
    /// Paid out or locked into escrow by sends of this run.
    pub usd_moved: Usd,
    pub log_commits: u64,
    pub dry_run: bool,
    pub plan: Vec<Planned>,
}

impl fmt::Display for PayoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            return write!(
                f,
                "dry run {}: {} rows, {} would be sent, {} refused by validation, {} already final, {} held by the brake; nothing written or sent",
                self.run_id,
                self.source_rows,
                self.plan.len(),
                self.rejected_rows,
                self.already_final,
                self.held_by_brake
            );
        }
        write!(
            f,
            "payouts {}: {} rows; completed {} (of which {} found by lookup), rejected by API {}, refused by validation {}, \
             unknown {}, waiting {}, held by brake {}, already final {}; moved {} USD in {} log commits",
            self.run_id,
            self.source_rows,
            self.completed,
            self.resolved_by_lookup,
            self.rejected_by_api,
            self.rejected_rows,
            self.unknown,
            self.waiting,
            self.held_by_brake,
            self.already_final,
            self.usd_moved,
            self.log_commits
        )
    }
}
