//! Escrows from a provider with no list endpoint: each escrow the payout log names, and each one the
//! provider is configured to read (`[provider] escrow_ids`), read by id (live: `GET /escrow/{id}`). Two tables: the seed's
//! `purpleflea.agents.escrows` (its columns unchanged: buyer = creator, seller = counterparty, the amount
//! in cents, metadata NULL since the service keeps none, `tx_id` the release's or refund's ledger reference)
//! and `purpleflea.agents.escrow_terms`, what the seed's table has no column for, exact to six decimals.

use std::collections::BTreeSet;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;

use crate::check;
use crate::http::HttpError;
use crate::provider::{EscrowRecord, HeldAgents, ProviderError};
use crate::sync::merge::upsert_changed;
use crate::sync::rows::{EscrowRow, EscrowStatus, EscrowTermsRow};
use crate::sync::{SyncError, SyncReport};
use crate::tables::row::{Row, Text};
use crate::tables::{CommitInfo, ESCROW_TERMS, ESCROWS, PAYOUT_LOG, Warehouse, open_existing, open_or_create};

/// An escrow as read, its times parsed.
struct Read {
    e: EscrowRecord,
    created_at: DateTime<Utc>,
    auto_release_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    released_at: Option<DateTime<Utc>>,
    disputed_at: Option<DateTime<Utc>>,
}

impl Read {
    fn new(e: EscrowRecord) -> Result<Read, String> {
        let at = |field: &str, v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|err| format!("{field} {v:?} is not an ISO time: {err}"))
        };
        let opt = |field: &str, v: &Option<String>| v.as_deref().map(|v| at(field, v)).transpose();
        check::id("escrow_id", &e.escrow_id)?;
        check::id("creator_id", &e.creator_id)?;
        check::id("counterparty_id", &e.counterparty_id)?;
        check::short_text("status", Some(&e.status))?;
        check::text("description", Some(&e.description))?;
        Ok(Read {
            created_at: at("created_at", &e.created_at)?,
            auto_release_at: at("auto_release_at", &e.auto_release_at)?,
            completed_at: opt("completed_at", &e.completed_at)?,
            released_at: opt("released_at", &e.released_at)?,
            disputed_at: opt("disputed_at", &e.disputed_at)?,
            e,
        })
    }

    /// The last change the escrow shows.
    fn updated_at(&self) -> DateTime<Utc> {
        [self.completed_at, self.released_at, self.disputed_at].into_iter().flatten().fold(self.created_at, Ord::max)
    }

    /// The ledger reference of the money the escrow paid out: the release's (as the payout log records a
    /// release) or the timeout refund's.
    fn tx_id(&self) -> Option<String> {
        match self.e.status.as_str() {
            "released" => Some(format!("{}_release", self.e.escrow_id)),
            "refunded" => Some(format!("{}_timeout", self.e.escrow_id)),
            _ => None,
        }
    }
}

/// Every escrow id in the payout log.
async fn logged_ids(wh: &Warehouse) -> Result<BTreeSet<String>, SyncError> {
    let Some(table) = open_existing(wh, &PAYOUT_LOG).await? else { return Ok(BTreeSet::new()) };
    let err = |e: datafusion::error::DataFusionError| SyncError::write(ESCROWS.name, e.into());
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(|e| SyncError::write(ESCROWS.name, e))?;
    ctx.register_table("log", table.table_provider().await.map_err(err)?).map_err(err)?;
    let batches = ctx
        .sql("SELECT DISTINCT escrow_id FROM log WHERE escrow_id IS NOT NULL")
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let mut out = BTreeSet::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let s = c.as_any().downcast_ref::<arrow::array::StringArray>().into_iter().flatten();
        out.extend(s.flatten().map(str::to_string));
    }
    Ok(out)
}

/// A refusal for this one escrow (unknown id, say): the row fails, the sync goes on.
fn row_refused(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::Refused { .. }
            | ProviderError::Http(
                HttpError::Status { status: 400..=499, .. } | HttpError::Unexpected { status: 400..=499, .. }
            )
    )
}

pub async fn sync_held_escrows(
    held: &dyn HeldAgents,
    wh: &Warehouse,
    commit: &CommitInfo,
) -> Result<Vec<SyncReport>, SyncError> {
    let started = Instant::now();
    let synced_at = Utc::now();
    let mut ids = logged_ids(wh).await?;
    ids.extend(held.escrow_ids().iter().cloned());
    let mut report = SyncReport { table: ESCROWS.name, full: true, ..SyncReport::default() };
    let mut rows = Vec::new();
    for id in &ids {
        report.rows_read += 1;
        report.pages += 1;
        match held.escrow(id).await.map_err(Some).and_then(|e| {
            Read::new(e).map_err(|r| {
                tracing::warn!(escrow = %id, reason = %r, "escrow skipped");
                None
            })
        }) {
            Ok(r) => rows.push(r),
            Err(None) => report.failed += 1,
            Err(Some(e)) if row_refused(&e) => {
                tracing::warn!(escrow = %id, error = %e, "escrow skipped");
                report.failed += 1;
            }
            Err(Some(e)) => return Err(e.into()),
        }
    }
    // The seed's table takes whole cents: an escrow of more decimals (never one pfsync created: those
    // come from whole-cent action rows) is kept only in escrow_terms, exactly, rather than rounded.
    let cents: Vec<&Read> = rows
        .iter()
        .filter(|r| {
            let whole = r.e.amount_usd.to_usd_exact().is_some();
            if !whole {
                tracing::warn!(escrow = %r.e.escrow_id, amount = %r.e.amount_usd,
                    "not whole cents: kept in purpleflea.agents.escrow_terms only");
            }
            whole
        })
        .collect();
    let escrows = escrows_batch(&cents, synced_at)?;
    let table = open_or_create(wh, &ESCROWS, commit).await?;
    let (table, n) = upsert_changed(table, &ESCROWS, &["last_synced_at"], false, escrows, commit.properties()).await?;
    report.inserted = n.inserted;
    report.updated = n.updated;
    report.unchanged = n.unchanged;
    report.version = table.version();
    report.elapsed = started.elapsed();

    let started = Instant::now();
    let terms = terms_batch(&rows.iter().collect::<Vec<_>>(), synced_at)?;
    let table = open_or_create(wh, &ESCROW_TERMS, commit).await?;
    let (table, n) =
        upsert_changed(table, &ESCROW_TERMS, &["last_synced_at"], false, terms, commit.properties()).await?;
    let terms_report = SyncReport {
        table: ESCROW_TERMS.name,
        full: true,
        rows_read: rows.len() as u64,
        inserted: n.inserted,
        updated: n.updated,
        unchanged: n.unchanged,
        version: table.version(),
        elapsed: started.elapsed(),
        ..SyncReport::default()
    };
    Ok(vec![report, terms_report])
}

fn escrows_batch(rows: &[&Read], synced_at: DateTime<Utc>) -> Result<RecordBatch, SyncError> {
    let rows = rows
        .iter()
        .map(|r| {
            Ok(EscrowRow {
                escrow_id: r.e.escrow_id.clone(),
                buyer_agent_id: r.e.creator_id.clone(),
                seller_agent_id: r.e.counterparty_id.clone(),
                // Only escrows of whole cents come here (the others stay in escrow_terms alone).
                amount_usd: r.e.amount_usd.to_usd_exact().ok_or_else(|| {
                    not_written(&r.e.escrow_id, format!("amount {} is not whole cents", r.e.amount_usd))
                })?,
                description: Some(r.e.description.clone()),
                metadata: None,
                status: status(r)?,
                created_at: r.created_at,
                updated_at: r.updated_at(),
                tx_id: r.tx_id(),
                last_synced_at: Some(synced_at),
            })
        })
        .collect::<Result<Vec<_>, SyncError>>()?;
    Ok(EscrowRow::to_batch(&rows)?)
}

fn terms_batch(rows: &[&Read], synced_at: DateTime<Utc>) -> Result<RecordBatch, SyncError> {
    let rows = rows
        .iter()
        .map(|r| {
            Ok(EscrowTermsRow {
                escrow_id: r.e.escrow_id.clone(),
                creator_agent_id: r.e.creator_id.clone(),
                counterparty_agent_id: r.e.counterparty_id.clone(),
                status: status(r)?,
                amount_usd: r.e.amount_usd,
                commission_usd: r.e.commission_usd,
                net_to_counterparty_usd: r.e.net_to_counterparty,
                timeout_hours: r.e.timeout_hours,
                created_at: r.created_at,
                auto_release_at: r.auto_release_at,
                completed_at: r.completed_at,
                released_at: r.released_at,
                disputed_at: r.disputed_at,
                last_synced_at: Some(synced_at),
            })
        })
        .collect::<Result<Vec<_>, SyncError>>()?;
    Ok(EscrowTermsRow::to_batch(&rows)?)
}

/// The escrow's status as the tables hold it: one this version does not know stops the sync rather than
/// land as text reconcile cannot read.
fn status(r: &Read) -> Result<EscrowStatus, SyncError> {
    <EscrowStatus as Text>::parse(&r.e.status)
        .ok_or_else(|| not_written(&r.e.escrow_id, format!("status {:?} is not one pfsync knows", r.e.status)))
}

fn not_written(escrow_id: &str, why: String) -> SyncError {
    SyncError::Arrow(arrow::error::ArrowError::InvalidArgumentError(format!("escrow {escrow_id}: {why}")))
}
