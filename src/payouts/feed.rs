//! Change-feed sources (`[[feeds]]` in the config file): a Delta table's change data feed (an events table
//! a Lakeflow / DLT pipeline appends to), read from the version after the last one consumed, through a SQL
//! query over the change rows (`changes`: the table's columns plus `_change_type`, `_commit_version`,
//! `_commit_timestamp`) that yields payout or escrow-action columns. Its operation ids come from the row
//! (the query derives them, e.g. from a key column or `_commit_version`), so a re-read pays nothing twice:
//! the stored position only saves reading again, it is never what keeps a payment single.
//!
//! The position is kept as two Delta application transactions on the payout log, written in the same log
//! commits as the intents they concern, so a position and the intents of what it read land together or not
//! at all:
//! - `pfsync.feed.<name>`: the last version of the events table *consumed*, i.e. read by a run whose
//!   intents for it are committed. It rides on every intent commit of that run.
//! - `pfsync.feed.<name>.from`: the version the next read *starts* at. Every operation read from versions
//!   before it is final in the log (completed or rejected). It rides on the same intent commits unchanged
//!   (the read's own start), and moves past the consumed version only once everything the read yielded is
//!   final. So an operation held by the brake, waiting for its create, or with an unknown outcome (a kill
//!   between intent and outcome included) is read again by the next run and carried on; ids make the
//!   re-read pay nothing twice.
//!
//! A table without a change data feed, or whose retained history no longer reaches the start (vacuumed,
//! log cleaned up), stops the run with a message; a feed never skips silently.

use std::sync::{Arc, Mutex};

use datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use futures::future::BoxFuture;
use url::Url;

use super::PayoutError;
use super::source::{ACTION_COLUMNS, PAYOUT_COLUMNS, RawRow, RowShape, Source, actions_from, payouts_from, query};

/// One `[[feeds]]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSpec {
    pub name: String,
    pub location: Url,
    pub query: String,
    pub shape: RowShape,
    /// Where the feed starts while it has no stored position.
    pub start_version: i64,
}

impl FeedSpec {
    /// The application id of this feed's position on the payout log.
    pub fn app_id(&self) -> String {
        format!("pfsync.feed.{}", self.name)
    }

    /// The application id of the version this feed's next read starts at.
    pub fn from_app_id(&self) -> String {
        format!("pfsync.feed.{}.from", self.name)
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
    pub start: i64,
    pub end_version: Option<i64>,
    pub op_ids: Vec<String>,
}

impl FeedRead {
    /// The application transactions an intent commit of this read carries: consumed up to the end, and
    /// the next read still starting where this one did (its operations are not final yet).
    pub fn intent_txns(&self, now_ms: i64) -> Vec<Transaction> {
        match self.end_version {
            Some(end) => vec![
                Transaction::new_with_last_update(&self.app_id, end, Some(now_ms)),
                Transaction::new_with_last_update(&self.from_app_id, self.start, Some(now_ms)),
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
            ],
            None => Vec::new(),
        }
    }
}

/// A feed as a source, reading from `start` (the version after the stored position).
pub struct FeedSource {
    pub spec: FeedSpec,
    pub start: i64,
    pub storage_options: std::collections::HashMap<String, String>,
    /// The table's version the read covered (set by `read`).
    pub end: Mutex<Option<i64>>,
}

impl FeedSource {
    pub fn new(
        spec: FeedSpec,
        start: i64,
        storage_options: std::collections::HashMap<String, String>,
    ) -> Arc<FeedSource> {
        Arc::new(FeedSource { spec, start, storage_options, end: Mutex::new(None) })
    }

    fn fail(&self, message: String) -> PayoutError {
        PayoutError::Source { source_name: format!("feed {}", self.spec.name), message }
    }

    pub fn end_version(&self) -> Option<i64> {
        *self.end.lock().unwrap_or_else(|p| p.into_inner())
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
            let mut table = deltalake::DeltaTableBuilder::from_url(loc.clone())
                .and_then(|b| b.with_storage_options(f.storage_options.clone()).build())
                .map_err(|e| f.fail(format!("table {loc}: {e}")))?;
            table.load().await.map_err(|e| f.fail(format!("table {loc} cannot be read: {e}")))?;
            let snapshot = table.snapshot().map_err(|e| f.fail(format!("table {loc}: {e}")))?;
            let latest: i64 = table.version().map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
            let cdf_on = snapshot
                .metadata()
                .configuration()
                .get("delta.enableChangeDataFeed")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            if !cdf_on {
                return Err(f.fail(format!(
                    "table {loc} does not record a change data feed (delta.enableChangeDataFeed is not true): \
                     enable it (ALTER TABLE ... SET TBLPROPERTIES (delta.enableChangeDataFeed = true)) before \
                     using the table as a feed"
                )));
            }
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
