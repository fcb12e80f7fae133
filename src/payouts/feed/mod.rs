//! Change-feed sources (`[[feeds]]` in the config file): a Delta table's change data feed (an events table
//! a Lakeflow / DLT pipeline appends to), read from the version after the last one consumed, through a SQL
//! query over the change rows (`changes`: the table's columns plus `_change_type`, `_commit_version`,
//! `_commit_timestamp`) that yields payout or escrow-action columns. Its operation ids come from the row
//! (the query derives them, e.g. from a key column or `_commit_version`), so a re-read pays nothing twice:
//! the stored position only saves reading again, it is never what keeps a payment single.
//!
//! The position is kept as Delta application transactions on the payout log, written in the same log
//! commits as the intents they concern, so a position and the intents of what it read land together or not
//! at all. They belong to one feed of one namespace over one table ([`FeedKey`]): two namespaces with a feed
//! of the same name, or a feed re-pointed at another table, never share or inherit a position.
//! - `pfsync.feed.<namespace>.<name>.<key>`: the last version of the events table *consumed*, i.e. read by a
//!   run whose intents for it are committed. It rides on every intent commit of that run. `<key>` is the
//!   feed's fingerprint ([`FeedKey::fingerprint`], 16 hex digits) over namespace, name, the table's Delta
//!   table id and its location.
//! - `pfsync.feed.<namespace>.<name>.<key>.from`: the version the next read *starts* at. Every operation
//!   read from versions before it is final in the log (completed or rejected). It rides on the same intent
//!   commits unchanged (the read's own start), and moves past the consumed version only once everything the
//!   read yielded is final. So an operation held by the brake, waiting for its create, or with an unknown
//!   outcome (a kill between intent and outcome included) is read again by the next run and carried on;
//!   ids make the re-read pay nothing twice.
//! - `pfsync.feed.<namespace>.<name>.table`: the fingerprint of the table this feed of this namespace read
//!   last, on the same commits. A feed whose table is another one now (re-pointed, or dropped and created
//!   again at the same location: a new table id) stops the run: reading the new table from the old table's
//!   position would skip its early versions, and reading it from the start may not be what the operator
//!   meant. It starts anew under a new name, or with `table_id` set to the new table's id.
//!
//! A table without a change data feed, or whose retained history no longer reaches the start (vacuumed,
//! log cleaned up), stops the run with a message; a feed never skips silently.
//!
//! Positions stored by pfsync before namespaces and tables were part of them (`pfsync.feed.<name>` and
//! `pfsync.feed.<name>.from`) name neither, so they are taken over only where that is unambiguous: by the
//! first feed of that name to read after the upgrade, when every intent in the log is its namespace's and
//! the position lies within its table's versions. The take-over is written at once under the feed's own ids
//! with a claim (`pfsync.feed.<name>.migrated`, the claimant's fingerprint), so no other namespace or
//! table takes it over later; a feed of another namespace or table then starts at its `start_version`.
//! Where the old position may be another namespace's (the log holds intents of several namespaces, or the
//! position lies past the table's last version), the run stops (exit 2) until the feed's `start_version`
//! says where to read from. Reading from an earlier version is always safe: ids pay nothing twice.

use std::sync::{Arc, Mutex};

use datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use futures::future::BoxFuture;
use url::Url;

mod position;

use super::PayoutError;
use super::source::{ACTION_COLUMNS, PAYOUT_COLUMNS, RawRow, RowShape, Source, actions_from, payouts_from, query};
pub use position::{FeedKey, Legacy, Start, Stored, decide_start, legacy};

/// One `[[feeds]]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSpec {
    pub name: String,
    pub location: Url,
    pub query: String,
    pub shape: RowShape,
    /// Where the feed starts while it has no stored position (`None`: not given, version 0).
    pub start_version: Option<i64>,
    /// The Delta table id the table at `location` must have (`None`: any, as long as it is the one this
    /// feed read before).
    pub table_id: Option<String>,
}

impl FeedSpec {
    /// The version a feed without a stored position reads from.
    pub fn first_version(&self) -> i64 {
        self.start_version.unwrap_or(0)
    }
}

/// A feed name: what a namespace may hold (it becomes part of an application id).
pub fn check_feed_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(format!("feed name {name:?} must be 1..=64 characters of a-z, 0-9, _ and -")) }
}

/// What one feed read: from which version, the events table's last version it covered (when there was
/// anything new), and the ids of the operations it yielded.
#[derive(Debug, Clone, Default)]
pub struct FeedRead {
    pub app_id: String,
    pub from_app_id: String,
    /// The feed's table binding: its application id and version (the fingerprint).
    pub table_app_id: String,
    pub fingerprint: i64,
    pub start: i64,
    pub end_version: Option<i64>,
    pub op_ids: Vec<String>,
}

impl FeedRead {
    /// The application transactions an intent commit of this read carries: consumed up to the end, the
    /// next read still starting where this one did (its operations are not final yet), and the table.
    pub fn intent_txns(&self, now_ms: i64) -> Vec<Transaction> {
        match self.end_version {
            Some(end) => vec![
                Transaction::new_with_last_update(&self.app_id, end, Some(now_ms)),
                Transaction::new_with_last_update(&self.from_app_id, self.start, Some(now_ms)),
                Transaction::new_with_last_update(&self.table_app_id, self.fingerprint, Some(now_ms)),
            ],
            None => Vec::new(),
        }
    }

    /// The transactions that move the feed on once everything it yielded is final.
    pub fn final_txns(&self, now_ms: i64) -> Vec<Transaction> {
        match self.end_version {
            Some(end) => vec![
                Transaction::new_with_last_update(&self.app_id, end, Some(now_ms)),
                Transaction::new_with_last_update(&self.from_app_id, end.saturating_add(1), Some(now_ms)),
                Transaction::new_with_last_update(&self.table_app_id, self.fingerprint, Some(now_ms)),
            ],
            None => Vec::new(),
        }
    }
}

/// A feed's events table, loaded once: the identity its position is stored under and its last version.
#[derive(Debug, Clone)]
pub struct FeedTable {
    pub key: FeedKey,
    pub table: deltalake::DeltaTable,
    /// -1 for a table with no version (never, for a table that loaded).
    pub latest: i64,
}

impl FeedTable {
    /// Load the feed's table: it must record a change data feed and, when the feed pins a table id, be
    /// that table.
    pub async fn open(
        spec: &FeedSpec,
        namespace: &str,
        storage_options: &std::collections::HashMap<String, String>,
    ) -> Result<FeedTable, PayoutError> {
        let fail = |message: String| PayoutError::Source { source_name: format!("feed {}", spec.name), message };
        let loc = spec.location.clone();
        let mut table = deltalake::DeltaTableBuilder::from_url(loc.clone())
            .and_then(|b| b.with_storage_options(storage_options.clone()).build())
            .map_err(|e| fail(format!("table {loc}: {e}")))?;
        table.load().await.map_err(|e| fail(format!("table {loc} cannot be read: {e}")))?;
        let snapshot = table.snapshot().map_err(|e| fail(format!("table {loc}: {e}")))?;
        let latest: i64 = table.version().map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let cdf_on = snapshot
            .metadata()
            .configuration()
            .get("delta.enableChangeDataFeed")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !cdf_on {
            return Err(fail(format!(
                "table {loc} does not record a change data feed (delta.enableChangeDataFeed is not true): \
                 enable it (ALTER TABLE ... SET TBLPROPERTIES (delta.enableChangeDataFeed = true)) before \
                 using the table as a feed"
            )));
        }
        let table_id = snapshot.metadata().id().to_string();
        if let Some(pin) = &spec.table_id
            && *pin != table_id
        {
            return Err(fail(format!(
                "the table at {loc} has Delta table id {table_id}, not the table_id {pin} the feed names: it is \
                 another table (re-created, or another location); point the feed at the table it names, or pin \
                 this one"
            )));
        }
        let key = FeedKey { namespace: namespace.to_string(), name: spec.name.clone(), table_id, location: loc };
        Ok(FeedTable { key, table, latest })
    }
}

/// A feed as a source, reading from `start` (the version after the stored position).
pub struct FeedSource {
    pub spec: FeedSpec,
    pub table: FeedTable,
    pub start: i64,
    /// The table's version the read covered (set by `read`).
    pub end: Mutex<Option<i64>>,
}

impl FeedSource {
    pub fn new(spec: FeedSpec, table: FeedTable, start: i64) -> Arc<FeedSource> {
        Arc::new(FeedSource { spec, table, start, end: Mutex::new(None) })
    }

    fn fail(&self, message: String) -> PayoutError {
        PayoutError::Source { source_name: format!("feed {}", self.spec.name), message }
    }

    pub fn end_version(&self) -> Option<i64> {
        *self.end.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this feed read, for its position.
    pub fn read_so_far(&self, op_ids: Vec<String>) -> FeedRead {
        let key = &self.table.key;
        FeedRead {
            app_id: key.app_id(),
            from_app_id: key.from_app_id(),
            table_app_id: key.table_app_id(),
            fingerprint: key.fingerprint(),
            start: self.start,
            end_version: self.end_version(),
            op_ids,
        }
    }
}

/// Wrap a shared feed so it can stand in the list of sources.
pub struct SharedFeed(pub Arc<FeedSource>);

impl Source for SharedFeed {
    fn name(&self) -> String {
        format!("feed {}", self.0.spec.name)
    }

    fn read<'a>(&'a self, _ctx: &'a SessionContext) -> BoxFuture<'a, Result<Vec<RawRow>, PayoutError>> {
        Box::pin(async move {
            let f = &self.0;
            let loc = f.spec.location.clone();
            let (table, latest) = (f.table.table.clone(), f.table.latest);
            if latest < f.start {
                // Nothing committed since the stored position.
                return Ok(Vec::new());
            }
            let retained = |e: &dyn std::fmt::Display| {
                f.fail(format!(
                    "the change data feed of {loc} cannot be read from version {} to {latest}: {e}. If the table \
                     was vacuumed or its log cleaned up past that version, the changes in between are gone: \
                     reconcile them by hand, then move the feed on (see README, Change feeds)",
                    f.start
                ))
            };
            let cdf = table.scan_cdf().with_starting_version(f.start.max(0) as u64).with_ending_version(latest as u64);
            let provider =
                deltalake::delta_datafusion::DeltaCdfTableProvider::try_new(cdf).map_err(|e| retained(&e))?;
            let fctx = SessionContext::new();
            fctx.register_table("changes", Arc::new(provider)).map_err(|e| retained(&e))?;
            let required = match f.spec.shape {
                RowShape::Payouts => PAYOUT_COLUMNS,
                RowShape::Actions => ACTION_COLUMNS,
            };
            let name = self.name();
            // A query that does not plan, or would write, is the query's fault, reported as such.
            super::source::read_only(&fctx, &name, &f.spec.query).await?;
            let batches = match query(&fctx, &name, &f.spec.query, required).await {
                Ok(b) => b,
                // A missing column is the query's fault: its own message. Anything else while reading the
                // changes: the retained history does not cover them.
                Err(e @ PayoutError::Source { .. }) => return Err(e),
                Err(PayoutError::SourceQuery { source, .. }) => return Err(retained(&source)),
                Err(e) => return Err(e),
            };
            *f.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(latest);
            Ok(match f.spec.shape {
                RowShape::Payouts => payouts_from(&batches)?.into_iter().map(RawRow::Payout).collect(),
                RowShape::Actions => actions_from(&batches)?.into_iter().map(RawRow::Action).collect(),
            })
        })
    }
}
