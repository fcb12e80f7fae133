//! Sync from a provider that lists nothing and answers each agent only to its own key ([`HeldAgents`]):
//! wallets one per held agent (`wallets.rs`), escrows by id (`escrows.rs`), and each held agent's ledger
//! window into pfsync's copy (`crate::ledger`), appended by entry id with gaps recorded.

pub mod escrows;
pub mod wallets;

pub use escrows::sync_held_escrows;
pub use wallets::sync_held_wallets;

use super::{SyncError, SyncReport};
use crate::provider::HeldAgents;
use crate::tables::{CommitInfo, LEDGER_ENTRIES, Warehouse};

/// The `transactions` target: every held agent's ledger window into `purpleflea.ledger.entries`.
pub async fn sync_held_ledgers(
    held: &dyn HeldAgents,
    wh: &Warehouse,
    commit: &CommitInfo,
) -> Result<SyncReport, SyncError> {
    let c = crate::ledger::copy_ledgers(held, wh, commit).await?;
    Ok(SyncReport {
        table: LEDGER_ENTRIES.name,
        pages: c.windows,
        rows_read: c.entries_read,
        inserted: c.inserted,
        unchanged: c.known,
        failed: c.failed,
        gaps: c.gaps,
        version: c.version,
        elapsed: c.elapsed,
        ..SyncReport::default()
    })
}
