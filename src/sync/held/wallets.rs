//! `purpleflea.agents.wallets` from a provider that answers only about held agents: one row per held key
//! (Purple Flea's live casino: `GET /auth/balance` and `GET /auth/referral/code`). The seed's columns stay
//! as they are; what the casino does not have is NULL:
//! `wallet_address` (the casino keeps a balance, not an on-chain wallet; deposit addresses are per chain),
//! `active_escrow_count` (the escrow service lists nothing, so pfsync cannot count an agent's escrows),
//! `total_earned_usd` (the casino's lifetime figures are deposits, wagers and winnings, not earnings),
//! `registered_at` (not answered to the key owner).

use std::time::Instant;

use chrono::Utc;

use crate::check;
use crate::provider::{AgentWallet, HeldAgents};
use crate::sync::merge::upsert_changed;
use crate::sync::rows::WalletRow;
use crate::sync::{SyncError, SyncReport};
use crate::tables::row::Row;
use crate::tables::{CommitInfo, WALLETS, Warehouse, open_or_create};

pub async fn sync_held_wallets(
    held: &dyn HeldAgents,
    wh: &Warehouse,
    commit: &CommitInfo,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let synced_at = Utc::now();
    let mut report = SyncReport { table: WALLETS.name, full: true, ..SyncReport::default() };
    let mut rows: Vec<AgentWallet> = Vec::new();
    for agent in held.agent_ids() {
        let wallet = held.wallet(&agent).await?;
        report.rows_read += 1;
        report.pages += 1;
        let checked = check::id("agent_id", &wallet.agent_id)
            .and_then(|()| check::short_text("referral_code", wallet.referral_code.as_deref()));
        if let Err(reason) = checked {
            report.failed += 1;
            tracing::warn!(agent = %agent, %reason, "wallet skipped");
            continue;
        }
        rows.push(wallet);
    }
    let rows: Vec<WalletRow> = rows
        .into_iter()
        .map(|w| WalletRow {
            agent_id: w.agent_id,
            wallet_address: None,
            // The seed's DOUBLE column: a display conversion of the exact amount; nothing computes in it.
            balance_usd: Some(w.balance.to_f64_lossy_for_display_column()),
            active_escrow_count: None,
            total_earned_usd: None,
            referral_code: w.referral_code,
            registered_at: None,
            last_synced_at: Some(synced_at),
        })
        .collect();
    let batch = WalletRow::to_batch(&rows)?;
    let table = open_or_create(wh, &WALLETS, commit).await?;
    let (table, counts) =
        upsert_changed(table, &WALLETS, &["last_synced_at"], false, batch, commit.properties()).await?;
    report.inserted = counts.inserted;
    report.updated = counts.updated;
    report.unchanged = counts.unchanged;
    report.version = table.version();
    report.elapsed = started.elapsed();
    Ok(report)
}
