-- live_ledger_gaps: the gaps syncs found in held agents' ledgers (each one a ledger_gap finding).
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT agent_id, kind, after_entry_id, after_balance_usd, before_entry_id, before_balance_usd, detail
FROM purpleflea.ledger.gaps
