-- live_escrows: the live escrows pfsync synced by id, with their exact amounts and commission.
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT *
FROM purpleflea.agents.escrow_terms
