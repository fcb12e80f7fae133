-- live_ledger_gaps: the gaps syncs found in held agents' ledgers (each one a ledger_gap finding).
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT *
FROM purpleflea.ledger.gaps
