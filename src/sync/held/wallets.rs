//! `purpleflea.agents.wallets` from a provider that answers only about held agents: one row per held key
//! (Purple Flea's live casino: `GET /auth/balance` and `GET /auth/referral/code`). The seed's columns stay
//! as they are; what the casino does not have is NULL:
//! `wallet_address` (the casino keeps a balance, not an on-chain wallet; deposit addresses are per chain),
//! `active_escrow_count` (the escrow service lists nothing, so pfsync cannot count an agent's escrows),
//! `total_earned_usd` (the casino's lifetime figures are deposits, wagers and winnings, not earnings),
//! `registered_at` (not answered to the key owner).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int32Array, RecordBatch, TimestampMicrosecondArray};
use chrono::Utc;

use crate::check;
use crate::provider::{AgentWallet, HeldAgents};
use crate::sync::merge::upsert_changed;
use crate::sync::{SyncError, SyncReport};
use crate::tables::arrays::texts;
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
    let n = rows.len();
    let nulls = || Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; n]).with_timezone("UTC")) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        texts(rows.iter().map(|r| Some(r.agent_id.as_str()))),
        texts(rows.iter().map(|_| None)),
        // The seed's DOUBLE column: a display conversion of the exact amount; nothing computes in it.
        Arc::new(rows.iter().map(|r| Some(r.balance.to_f64_lossy_for_display_column())).collect::<Float64Array>()),
        Arc::new(Int32Array::from(vec![None::<i32>; n])),
        Arc::new(Float64Array::from(vec![None::<f64>; n])),
        texts(rows.iter().map(|r| r.referral_code.as_deref())),
        nulls(),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(synced_at.timestamp_micros()); n]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(WALLETS.arrow_schema(), columns)?;
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
