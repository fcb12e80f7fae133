//! The sync of one table: read what changed since the stored position (less an overlap window), write it
//! in bounded batches, each commit carrying the new position (see `tables::position`).
//!
//! Writes by mode:
//! - upsert tables (wallets, escrows): the first load of an empty table is a plain append; after that each
//!   batch is diffed against the table (a DataFusion anti-join on the key and every content column) and only
//!   new or changed rows go into a MERGE, so unchanged rows are never rewritten and CDF shows only real
//!   changes. A `--full` refresh writes every listed row (moving `last_synced_at`).
//! - append-only tables (transactions): rows the table already holds (the overlap window) are dropped,
//!   the rest appended.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;

use super::entity::{Synced, WriteMode};
use super::{SyncError, SyncOptions, SyncReport};
use crate::progress::Progress;
use crate::provider::Listings;
use crate::provider::records::{ListQuery, RowError, shown_id};
use crate::tables::position;
use crate::tables::{CommitInfo, Warehouse, open_or_create};

/// Attempts when another writer commits to the same table first.
const MAX_CONFLICT_RETRIES: u32 = 5;

/// Sync one table, retrying from the new position when a concurrent sync wins a commit race.
pub async fn sync_table<T: Synced>(
    listings: &dyn Listings,
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &SyncOptions,
    progress: &Progress,
) -> Result<SyncReport, SyncError> {
    // One deadline for the whole sync, conflict retries included.
    let deadline = tokio::time::Instant::now() + opts.max_duration;
    let mut attempt = 1;
    loop {
        match sync_once::<T>(listings, wh, commit, opts, progress, deadline).await {
            Err(SyncError::Write { source, .. })
                if position::is_conflict(&source) && attempt < MAX_CONFLICT_RETRIES =>
            {
                tracing::warn!(
                    table = T::SPEC.name,
                    attempt,
                    "another writer committed first; syncing again from its position"
                );
                attempt += 1;
            }
            other => {
                progress.finish();
                return other;
            }
        }
    }
}

fn write_err<T: Synced>(e: deltalake::DeltaTableError) -> SyncError {
    SyncError::write(T::SPEC.name, e)
}

fn query_err<T: Synced>(e: datafusion::error::DataFusionError) -> SyncError {
    SyncError::write(T::SPEC.name, e.into())
}

/// Keep the newest copy of a row seen more than once (it changed while we paged).
fn keep_newest<T: Synced>(into: &mut HashMap<String, T>, row: T) {
    match into.get(row.key()) {
        Some(old) if old.changed_at() > row.changed_at() => {}
        _ => {
            into.insert(row.key().to_string(), row);
        }
    }
}

async fn sync_once<T: Synced>(
    listings: &dyn Listings,
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &SyncOptions,
    progress: &Progress,
    deadline: tokio::time::Instant,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let out_of_time = || SyncError::Deadline { table: T::SPEC.name, limit: opts.max_duration };
    let table = open_or_create(wh, T::SPEC, commit).await?;
    let stored = position::read(&table, T::SPEC).await.map_err(write_err::<T>)?;
    let full = opts.full || stored.is_none();
    let overlap = ChronoDuration::from_std(opts.overlap).unwrap_or_else(|_| ChronoDuration::minutes(5));
    let since = if full { None } else { stored.map(|p| p - overlap) };
    let first_load = !has_data(&table, T::SPEC.name)?;
    let synced_at = Utc::now();
    let mut w = Writer::<T> {
        table,
        commit,
        full,
        first_load,
        position: stored,
        frozen: false,
        synced_at,
        report: SyncReport { table: T::SPEC.name, full, since, ..SyncReport::default() },
        _t: std::marker::PhantomData,
    };

    // Rows first seen with a change time after the start can also have been seen before with an older
    // one; on a first load (plain appends) they are held back and merged at the end.
    let mut batch: HashMap<String, T> = HashMap::new();
    let mut late: HashMap<String, T> = HashMap::new();
    let mut seen: Option<HashSet<String>> = (full && !first_load && T::MODE == WriteMode::Upsert).then(HashSet::new);
    let mut warned: HashSet<String> = HashSet::new();
    let query = ListQuery { limit: Some(opts.page_size), since, ..ListQuery::default() };
    let mut pages = T::pages(listings, query);
    // Every way out of this loop but its end returns before the rows still held are written: a provider
    // that repeats a cursor, keeps paging past the caps or outlasts the deadline gets nothing more
    // committed (batches already full were committed with the position they reached, as always).
    loop {
        let next = tokio::time::timeout_at(deadline, pages.try_next()).await.map_err(|_| out_of_time())?;
        let Some(page) = next? else { break };
        w.report.pages += 1;
        if page.next_cursor.is_some() && w.report.pages >= opts.max_pages {
            return Err(SyncError::TooManyPages { table: T::SPEC.name, limit: opts.max_pages });
        }
        if w.report.rows_read + page.rows.len() as u64 > opts.max_rows {
            return Err(SyncError::TooManyRows { table: T::SPEC.name, limit: opts.max_rows });
        }
        for f in page.unknown_fields {
            if warned.insert(f.clone()) {
                tracing::warn!(table = T::SPEC.name, field = %f, "the API sent a field the contract does not define; ignored");
            }
        }
        for row in page.rows {
            w.report.rows_read += 1;
            // A row that decodes but breaks a rule (see `check.rs`) fails like one that does not decode.
            let row = row.and_then(|r| match r.check() {
                Ok(()) => Ok(r),
                Err(reason) => Err(RowError { entity: T::ENTITY, id: shown_id(r.key()), reason }),
            });
            match row {
                Ok(r) => {
                    if let Some(s) = seen.as_mut() {
                        s.insert(r.key().to_string());
                    }
                    let append_path = first_load && T::MODE == WriteMode::Upsert;
                    keep_newest(if append_path && r.changed_at() > synced_at { &mut late } else { &mut batch }, r);
                }
                Err(e) => {
                    w.report.failed += 1;
                    // A row we could not read may be older than rows after it: stop moving the position so
                    // the next run reads it again (and still fails loudly until the API is fixed).
                    w.frozen = true;
                    tracing::warn!(table = T::SPEC.name, error = %e, "row skipped");
                }
            }
        }
        progress.rows(w.report.rows_read, w.report.pages);
        #[cfg(feature = "test-hooks")]
        if opts.fail_after_pages.is_some_and(|n| w.report.pages >= n) {
            return Err(SyncError::Injected { table: T::SPEC.name, pages: w.report.pages });
        }
        if batch.len() >= opts.batch_rows.max(1) {
            if tokio::time::Instant::now() >= deadline {
                return Err(out_of_time());
            }
            w.flush(std::mem::take(&mut batch)).await?;
        }
    }
    if tokio::time::Instant::now() >= deadline {
        return Err(out_of_time());
    }
    progress.phase("writing");
    w.flush(batch).await?;
    if !late.is_empty() {
        w.first_load = false;
        w.flush(late).await?;
    }
    if let Some(seen) = seen {
        w.report.missing = w.count_missing(&seen).await?;
        if w.report.missing > 0 {
            tracing::warn!(
                table = T::SPEC.name,
                missing = w.report.missing,
                "rows the API no longer lists are kept, with their last_synced_at left at an earlier sync"
            );
        }
    }
    w.report.version = w.table.version();
    w.report.elapsed = started.elapsed();
    Ok(w.report)
}

fn has_data(table: &DeltaTable, name: &'static str) -> Result<bool, SyncError> {
    if table.version().is_none() {
        return Ok(false);
    }
    Ok(table.get_file_uris().map_err(|e| SyncError::write(name, e))?.next().is_some())
}

struct Writer<'a, T: Synced> {
    table: DeltaTable,
    commit: &'a CommitInfo,
    full: bool,
    first_load: bool,
    position: Option<DateTime<Utc>>,
    /// Set once a row failed: later commits keep the position where it was.
    frozen: bool,
    synced_at: DateTime<Utc>,
    report: SyncReport,
    _t: std::marker::PhantomData<T>,
}

impl<T: Synced> Writer<'_, T> {
    /// Commit one batch of rows with the position it reaches.
    async fn flush(&mut self, rows: HashMap<String, T>) -> Result<(), SyncError> {
        if rows.is_empty() {
            return Ok(());
        }
        let newest = rows.values().map(|r| r.changed_at()).max();
        let reach = if self.frozen { self.position } else { newest.max(self.position) };
        let mut rows: Vec<&T> = rows.values().collect();
        rows.sort_by(|a, b| a.key().cmp(b.key()));
        match T::MODE {
            WriteMode::AppendOnly => self.append_new(rows, reach).await,
            WriteMode::Upsert if self.first_load => {
                let n = rows.len() as u64;
                let batch = T::to_batch(&rows, self.synced_at)?;
                self.append(batch, reach).await?;
                self.report.inserted += n;
                Ok(())
            }
            WriteMode::Upsert => self.upsert(rows, reach).await,
        }
    }

    fn properties(&self, reach: Option<DateTime<Utc>>) -> deltalake::kernel::transaction::CommitProperties {
        match reach {
            Some(p) => position::commit_properties(self.commit, T::SPEC, p),
            None => self.commit.properties(),
        }
    }

    async fn append(&mut self, batch: RecordBatch, reach: Option<DateTime<Utc>>) -> Result<(), SyncError> {
        let table = self
            .table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(self.properties(reach))
            .await
            .map_err(write_err::<T>)?;
        self.table = table;
        self.position = reach;
        Ok(())
    }

    /// A session with the table registered as `target`.
    async fn session(&self) -> Result<SessionContext, SyncError> {
        let ctx = SessionContext::new();
        self.table.update_datafusion_session(&ctx.state()).map_err(write_err::<T>)?;
        let provider = self.table.table_provider().await.map_err(query_err::<T>)?;
        ctx.register_table("target", provider).map_err(query_err::<T>)?;
        Ok(ctx)
    }

    /// Append-only: drop rows the table already holds (only rows at or before the stored position can
    /// be there), append the rest.
    async fn append_new(&mut self, rows: Vec<&T>, reach: Option<DateTime<Utc>>) -> Result<(), SyncError> {
        let key = T::SPEC.columns[0].name;
        let overlap: Vec<&T> = match self.position {
            Some(p) if !self.first_load => rows.iter().copied().filter(|r| r.changed_at() <= p).collect(),
            _ => Vec::new(),
        };
        let existing: HashSet<String> = match overlap.iter().map(|r| r.changed_at()).min() {
            None => HashSet::new(),
            Some(oldest) => {
                let ctx = self.session().await?;
                // `created_date` first so partition pruning reads only the overlap's days.
                let sql = format!(
                    "SELECT {key} FROM target WHERE created_date >= DATE '{}' AND created_at >= TIMESTAMP '{}'",
                    oldest.format("%Y-%m-%d"),
                    oldest.format("%Y-%m-%dT%H:%M:%S%.6fZ")
                );
                let batches = ctx.sql(&sql).await.map_err(query_err::<T>)?.collect().await.map_err(query_err::<T>)?;
                string_values(&batches, 0)?
            }
        };
        let fresh: Vec<&T> = rows.into_iter().filter(|r| !existing.contains(r.key())).collect();
        self.report.unchanged += existing.len() as u64;
        if fresh.is_empty() {
            return Ok(());
        }
        let n = fresh.len() as u64;
        let batch = T::to_batch(&fresh, self.synced_at)?;
        self.append(batch, reach).await?;
        self.report.inserted += n;
        Ok(())
    }

    /// Upsert: MERGE only the rows that are new or differ from the table (all listed rows on `--full`).
    async fn upsert(&mut self, rows: Vec<&T>, reach: Option<DateTime<Utc>>) -> Result<(), SyncError> {
        let source = T::to_batch(&rows, self.synced_at)?;
        let properties = self.properties(reach);
        let (table, n) =
            super::merge::upsert_changed(self.table.clone(), T::SPEC, T::BOOKKEEPING, self.full, source, properties)
                .await?;
        self.report.inserted += n.inserted;
        self.report.updated += n.updated;
        self.report.unchanged += n.unchanged;
        self.table = table;
        // Nothing written, nothing committed: the position stays where the table has it.
        if n.inserted + n.updated > 0 {
            self.position = reach;
        }
        Ok(())
    }

    /// Keys in the table that a full listing did not return.
    async fn count_missing(&self, seen: &HashSet<String>) -> Result<u64, SyncError> {
        let ctx = self.session().await?;
        let key = T::SPEC.columns[0].name;
        let batches = ctx
            .sql(&format!("SELECT {key} FROM target"))
            .await
            .map_err(query_err::<T>)?
            .collect()
            .await
            .map_err(query_err::<T>)?;
        let keys = string_values(&batches, 0)?;
        let missing: Vec<&String> = keys.iter().filter(|k| !seen.contains(*k)).collect();
        if let Some(first) = missing.first() {
            tracing::info!(table = T::SPEC.name, example = %first, "a row the API no longer lists");
        }
        Ok(missing.len() as u64)
    }
}

/// One string column of query results (DataFusion may return Utf8View; cast to read it).
fn string_values(batches: &[RecordBatch], column: usize) -> Result<HashSet<String>, SyncError> {
    let mut out = HashSet::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(column), &DataType::Utf8)?;
        let s = c
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| SyncError::Arrow(arrow::error::ArrowError::SchemaError("key column is not text".into())))?;
        out.extend((0..s.len()).filter(|i| !s.is_null(*i)).map(|i| s.value(i).to_string()));
    }
    Ok(out)
}
