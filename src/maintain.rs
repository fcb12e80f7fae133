//! `pfsync maintain`: compact small files, write a checkpoint, and vacuum files no version within the
//! retention needs. The retention never goes below 7 days without `--i-know`, and never below what a table
//! itself declares (`delta.deletedFileRetentionDuration`: the append-only audit tables keep a year, so
//! auditors can time-travel to any run in that window).

use std::fmt;

use chrono::Duration as ChronoDuration;
use deltalake::DeltaTable;
use deltalake::operations::optimize::OptimizeType;

use crate::tables::{ALL, CommitInfo, TableError, TableSpec, Warehouse, open_existing};

/// Delta's own default and the floor below which `--i-know` is required.
pub const MIN_SAFE_RETENTION_HOURS: u64 = 7 * 24;

#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    #[error(
        "--retention-hours {0} is below 7 days (168 h): readers and running jobs may still need those files. \
         Pass --i-know to do it anyway"
    )]
    RetentionTooShort(u64),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{table}: {step} failed: {source}")]
    Delta { table: &'static str, step: &'static str, source: Box<deltalake::DeltaTableError> },
}

impl MaintainError {
    pub fn class(&self) -> crate::errors::ErrorClass {
        match self {
            MaintainError::RetentionTooShort(_) => crate::errors::ErrorClass::Usage,
            MaintainError::Table(e) => e.class(),
            MaintainError::Delta { .. } => crate::errors::ErrorClass::Storage,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MaintainOptions {
    pub retention_hours: u64,
    pub i_know: bool,
    /// List what vacuum would delete; still compacts and checkpoints.
    pub dry_run: bool,
}

impl MaintainOptions {
    /// Checked before any table is touched.
    pub fn validate(&self) -> Result<(), MaintainError> {
        if self.retention_hours < MIN_SAFE_RETENTION_HOURS && !self.i_know {
            return Err(MaintainError::RetentionTooShort(self.retention_hours));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct MaintainReport {
    pub table: &'static str,
    pub files_before: usize,
    pub files_removed: u64,
    pub files_added: u64,
    pub checkpoint_version: Option<u64>,
    pub retention_hours: u64,
    pub vacuumed: usize,
    pub dry_run: bool,
}

impl fmt::Display for MaintainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: compacted {} of {} files into {}; checkpoint at version {}; vacuum (retention {} h) {} {} files",
            self.table,
            self.files_removed,
            self.files_before,
            self.files_added,
            self.checkpoint_version.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            self.retention_hours,
            if self.dry_run { "would delete" } else { "deleted" },
            self.vacuumed
        )
    }
}

/// `interval 365 days` / `interval 12 hours` / `1 week` (Delta's interval strings) in hours.
pub fn interval_hours(text: &str) -> Option<u64> {
    let words: Vec<String> = text.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).skip_while(|w| *w == "interval").collect();
    let [n, unit] = words.as_slice() else { return None };
    let n: u64 = n.parse().ok()?;
    let per = match unit.trim_end_matches('s') {
        "week" => 7 * 24,
        "day" => 24,
        "hour" => 1,
        "minute" => return Some(n.div_ceil(60)),
        "second" => return Some(n.div_ceil(3600)),
        _ => return None,
    };
    n.checked_mul(per)
}

/// The retention a table declares for removed files, in hours, if any.
fn declared_retention_hours(table: &DeltaTable) -> Option<u64> {
    let snapshot = table.snapshot().ok()?;
    snapshot.metadata().configuration().get("delta.deletedFileRetentionDuration").and_then(|v| interval_hours(v))
}

fn step_err(spec: &TableSpec, step: &'static str) -> impl FnOnce(deltalake::DeltaTableError) -> MaintainError {
    let table = spec.name;
    move |e| MaintainError::Delta { table, step, source: Box::new(e) }
}

pub async fn maintain_table(
    wh: &Warehouse,
    spec: &'static TableSpec,
    opts: &MaintainOptions,
    commit: &CommitInfo,
) -> Result<Option<MaintainReport>, MaintainError> {
    let Some(table) = open_existing(wh, spec).await? else { return Ok(None) };
    let files_before = table.get_file_uris().map_err(step_err(spec, "listing files"))?.count();
    let (table, metrics) = table
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_commit_properties(commit.properties())
        .await
        .map_err(step_err(spec, "optimize"))?;
    deltalake::checkpoints::create_checkpoint(&table, None).await.map_err(step_err(spec, "checkpoint"))?;
    let checkpoint_version = table.version();
    let declared = declared_retention_hours(&table).unwrap_or(0);
    let retention_hours = opts.retention_hours.max(declared);
    // pfsync has checked the floors itself (7 days unless --i-know, and the table's own declaration);
    // delta-rs's check would only repeat the first one.
    let (_, vacuum) = table
        .vacuum()
        .with_retention_period(ChronoDuration::hours(retention_hours as i64))
        .with_enforce_retention_duration(false)
        .with_dry_run(opts.dry_run)
        .with_commit_properties(commit.properties())
        .await
        .map_err(step_err(spec, "vacuum"))?;
    Ok(Some(MaintainReport {
        table: spec.name,
        files_before,
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        checkpoint_version,
        retention_hours,
        vacuumed: vacuum.files_deleted.len(),
        dry_run: opts.dry_run,
    }))
}

/// Maintain every table pfsync owns that exists.
pub async fn maintain_all(
    wh: &Warehouse,
    opts: &MaintainOptions,
    commit: &CommitInfo,
) -> Result<Vec<MaintainReport>, MaintainError> {
    opts.validate()?;
    let mut out = Vec::new();
    for spec in ALL {
        if let Some(r) = maintain_table(wh, spec, opts, commit).await? {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(interval_hours("interval 365 days"), Some(8760));
        assert_eq!(interval_hours("interval 1 week"), Some(168));
        assert_eq!(interval_hours("12 hours"), Some(12));
        assert_eq!(interval_hours("INTERVAL 90 MINUTES"), Some(2));
        assert_eq!(interval_hours("forever"), None);
    }

    #[test]
    fn short_retention_needs_i_know() {
        let o = MaintainOptions { retention_hours: 1, i_know: false, dry_run: false };
        assert!(o.validate().unwrap_err().to_string().contains("--i-know"));
        assert!(MaintainOptions { i_know: true, ..o }.validate().is_ok());
    }
}
