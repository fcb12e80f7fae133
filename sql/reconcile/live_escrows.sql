-- live_escrows: the live escrows pfsync synced by id, with their exact amounts and commission.
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT escrow_id, creator_agent_id, counterparty_agent_id, status, amount_usd, commission_usd,
       net_to_counterparty_usd
FROM purpleflea.agents.escrow_terms
