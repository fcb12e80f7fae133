-- balance_mismatches: wallet balances that differ from what the synced transactions imply
-- (purpleflea.ledger.implied_balances, which reconcile keeps), in whole cents, so the seed's DOUBLE balance
-- column is compared without float arithmetic on the ledger side.
-- DataFusion SQL, run by `pfsync reconcile` when purpleflea.agents.wallets exists; not deployed to Databricks.
SELECT w.agent_id,
       CAST(round(w.balance_usd * 100) AS BIGINT) AS actual_cents,
       CAST(coalesce(i.implied_usd, 0) * 100 AS BIGINT) AS expected_cents
FROM purpleflea.agents.wallets w LEFT JOIN purpleflea.ledger.implied_balances i ON i.agent_id = w.agent_id
WHERE CAST(round(w.balance_usd * 100) AS BIGINT) <> CAST(coalesce(i.implied_usd, 0) * 100 AS BIGINT)
