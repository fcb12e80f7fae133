-- live_wallets: the synced balance of every wallet (one per held key on the live provider).
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/live.rs); not deployed to Databricks.
SELECT * FROM purpleflea.agents.wallets
