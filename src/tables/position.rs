//! Exactly-once for syncs, in one place. A table's sync position (the newest `updated_at` / `created_at` it
//! holds, in microseconds) is written as a Delta `txn` action (app id `pfsync.sync.<table>`) in the *same*
//! commit as the rows it covers, as kafka-delta-ingest does with offsets. So "data written" and "position
//! saved" are one atomic step: a crash leaves either both or neither, and a rerun resumes from the position
//! the table itself holds. Two syncs of one table at once both write that app id, so Delta's conflict
//! checker lets only one commit win; the other retries from the new position.

use chrono::{DateTime, TimeZone, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;

use crate::tables::{CommitInfo, TableSpec};

pub fn app_id(spec: &TableSpec) -> String {
    format!("pfsync.sync.{}", spec.name)
}

/// The position stored in the table's log, if any sync committed one.
pub async fn read(table: &DeltaTable, spec: &TableSpec) -> Result<Option<DateTime<Utc>>, deltalake::DeltaTableError> {
    if table.version().is_none() {
        return Ok(None);
    }
    let snapshot = table.snapshot()?;
    let version = snapshot.transaction_version(table.log_store().as_ref(), app_id(spec)).await?;
    Ok(version.and_then(|micros| Utc.timestamp_micros(micros).single()))
}

/// Commit properties for a data commit that also moves the position to `position`.
pub fn commit_properties(commit: &CommitInfo, spec: &TableSpec, position: DateTime<Utc>) -> CommitProperties {
    commit.properties().with_application_transaction(Transaction::new(app_id(spec), position.timestamp_micros()))
}

/// Did a commit lose a race with another writer (retry from the new state), as opposed to failing?
pub fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    match e {
        deltalake::DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
                | TransactionError::VersionAlreadyExists(_)
        ),
        deltalake::DeltaTableError::VersionAlreadyExists(_) => true,
        _ => false,
    }
}
