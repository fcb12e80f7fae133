-- unlogged_at_provider: provider transactions with a key of our namespace that no logged operation carries.
-- DataFusion SQL, run by `pfsync reconcile`; not deployed to Databricks.
-- Parameter: $key_prefix, the namespace's key prefix (`pfsync:<namespace>:`), bound as a value so a
-- namespace is never spliced into the SQL text. The prefix test is written with left() because DataFusion
-- spells it starts_with and Spark startswith; LIKE would read a `_` in the namespace as a wildcard.
SELECT t.tx_id, t.kind, t.agent_id, t.amount_usd, t.idempotency_key
FROM purpleflea.ledger.transactions t
LEFT JOIN (SELECT DISTINCT idempotency_key FROM purpleflea.payouts.log) l ON l.idempotency_key = t.idempotency_key
WHERE left(t.idempotency_key, char_length($key_prefix)) = $key_prefix AND l.idempotency_key IS NULL
