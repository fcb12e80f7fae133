//! The payers' ledgers as pfsync copied them, for the executor: refreshed before a run judges anything and
//! after each batch, read back as evidence for lookups, and searched for debits no operation claims. None
//! of this decides a send: a copy that fails or cannot be read is no evidence, and the next copy reads the
//! window again (recording a gap if the window has moved past it).

use chrono::{DateTime, Duration, Utc};
use deltalake::DeltaTable;

use super::PayoutError;
use super::execution::Execution;
use crate::ledger::history::CopiedTail;
use crate::provider::{LedgerEntry, Provider};
use crate::tables::{CommitInfo, Warehouse};

/// Copy the held agents' ledgers (a provider that answers only their newest entries) into the warehouse.
pub(super) async fn refresh(provider: &dyn Provider, wh: Option<&Warehouse>, run: &CommitInfo) {
    let (Some(wh), Some(held)) = (wh, provider.held_agents()) else { return };
    let commit = CommitInfo { run_id: run.run_id.clone(), step: "sync.transactions" };
    match crate::ledger::copy_ledgers(held, wh, &commit).await {
        Ok(r) if r.gaps > 0 => tracing::warn!(gaps = r.gaps, "ledger copy during payouts found gaps"),
        Ok(r) => tracing::debug!(inserted = r.inserted, "ledger copied after a batch"),
        Err(e) => tracing::warn!(error = %e, "ledger copy during payouts failed; the next sync reads it again"),
    }
}

/// The payer's copied ledger as one unbroken chain from an hour before `since` (the evidence reaches back
/// that far for clock skew and slow sends) to the newest copied entry. A copy that cannot be read is no
/// evidence: the live window alone then decides, or leaves the outcome to a person.
pub(super) async fn tail(wh: Option<&Warehouse>, payer: &str, since: DateTime<Utc>) -> CopiedTail {
    let Some(wh) = wh else { return CopiedTail::default() };
    match crate::ledger::history::unbroken_tail(wh, payer, since - Duration::hours(1)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(payer, error = %e, "pfsync's ledger copy could not be read as evidence");
            CopiedTail::default()
        }
    }
}

/// Say so when a payer's copied ledger of the last day holds debits that no operation claims and no open
/// unknown explains: the payer is used outside pfsync (or a request ran late). The ledger evidence is
/// unaffected (a candidate is one debit of the exact amount, unclaimed, after the intent), but an operator
/// should know.
pub(super) async fn unclaimed_debits(
    wh: Option<&Warehouse>,
    log: &DeltaTable,
    ex: &mut Execution,
    payer: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), PayoutError> {
    let Some(wh) = wh else { return Ok(()) };
    let since = now - Duration::days(1);
    let slack = Duration::hours(1);
    let mut payers = ex.payers();
    payers.extend(payer.filter(|p| !payers.contains(p)));
    for payer in payers {
        let debits = match crate::ledger::history::paying_debits(wh, &payer, since).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(payer, error = %e, "the ledger copy could not be read for unclaimed debits");
                continue;
            }
        };
        let refs: Vec<String> = debits.iter().map(|(r, _)| r.clone()).collect();
        let claims = super::log::claims_of(log, &refs).await?;
        let unclaimed: Vec<&(String, LedgerEntry)> = debits
            .iter()
            .filter(|(r, _)| !claims.contains_key(r))
            .filter(|(_, e)| {
                let at = DateTime::from_timestamp(e.created_at, 0).unwrap_or_default();
                let amount = e.amount.to_usd_exact();
                !amount.is_some_and(|a| ex.explains(&payer, a, at, slack))
            })
            .collect();
        if let Some((first, _)) = unclaimed.first() {
            tracing::warn!(
                payer,
                unclaimed = unclaimed.len(),
                first = %first,
                "debits on the payer's ledger of the last day are claimed by no logged operation: the payer is \
                 used outside pfsync, or a request ran late; reconcile reports each (unlogged_at_provider)"
            );
            ex.note_unclaimed_debits(unclaimed.len() as u64);
        }
    }
    Ok(())
}
