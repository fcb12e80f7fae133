//! What the classification covers, in one place. Each commit of `purpleflea.payouts.classification` carries
//! Delta application transactions (`txn`, as the sync positions in `tables/position.rs`): the payout log and
//! transactions versions its rows were computed up to, and the versions of `purpleflea.ledger.implied_balances`
//! and `purpleflea.ops.daily_totals` written for that same state (those two are committed just before it).
//! A run starts from what the classification's own log says: a run killed after writing the totals but
//! before the classification reads the totals at the versions the classification names, and redoes the rest.

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;

use super::state::Versions;

const LOG: &str = "pfsync.reconcile.log";
const TRANSACTIONS: &str = "pfsync.reconcile.transactions";
const BALANCES: &str = "pfsync.reconcile.implied_balances";
const DAILY: &str = "pfsync.reconcile.daily_totals";

/// The state one classification commit describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub versions: Versions,
    /// Version of `purpleflea.ledger.implied_balances` holding the balances for this state.
    pub balances: i64,
    /// Version of `purpleflea.ops.daily_totals` holding the totals for this state.
    pub daily: i64,
}

/// The coverage the classification's log holds, if a run committed one.
pub async fn read(table: &DeltaTable) -> Result<Option<Coverage>, deltalake::DeltaTableError> {
    if table.version().is_none() {
        return Ok(None);
    }
    let snapshot = table.snapshot()?;
    let store = table.log_store();
    let mut values = Vec::with_capacity(4);
    for app in [LOG, TRANSACTIONS, BALANCES, DAILY] {
        match snapshot.transaction_version(store.as_ref(), app).await? {
            Some(v) => values.push(v),
            None => return Ok(None),
        }
    }
    Ok(Some(Coverage {
        versions: Versions { log: values[0], transactions: values[1] },
        balances: values[2],
        daily: values[3],
    }))
}

/// The `txn` actions of a classification commit for `c`.
pub fn transactions(c: &Coverage) -> Vec<Transaction> {
    vec![
        Transaction::new(LOG, c.versions.log),
        Transaction::new(TRANSACTIONS, c.versions.transactions),
        Transaction::new(BALANCES, c.balances),
        Transaction::new(DAILY, c.daily),
    ]
}
