-- live_ledger_entries: the synced ledger entries of every held agent, in chain order per agent.
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT *
FROM purpleflea.ledger.entries
ORDER BY agent_id, ledger_seq
