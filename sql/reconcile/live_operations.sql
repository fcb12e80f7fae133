-- live_operations: every event of the payout log, for the live provider's checks (src/reconcile/live.rs),
-- which fold each operation's events through the status machine (src/payouts/state.rs, the same rules as
-- the purpleflea.payouts.status view) and match them against the synced ledgers and escrow states.
-- DataFusion SQL, run by `pfsync reconcile` when purpleflea.ledger.entries holds rows; not deployed.
SELECT *
FROM purpleflea.payouts.log
