-- live_operations: every operation of the payout log with its current status, for the live provider's
-- checks (src/reconcile/live.rs), which match them against the synced ledgers and escrow states.
-- DataFusion SQL, run by `pfsync reconcile` when purpleflea.ledger.entries holds rows; not deployed.
SELECT operation_id, kind, status, agent_id, counterparty_agent_id, amount_usd, tx_id, escrow_id, error_code,
       error_message, last_recorded_at
FROM purpleflea.payouts.status
