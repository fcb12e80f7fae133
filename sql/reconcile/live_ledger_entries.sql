-- live_ledger_entries: the synced ledger entries of every held agent, in chain order per agent.
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT entry_id, agent_id, type, amount_usd, balance_after_usd, reason, reference, ledger_seq
FROM purpleflea.ledger.entries
ORDER BY agent_id, ledger_seq
