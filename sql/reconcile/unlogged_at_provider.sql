-- unlogged_at_provider: provider transactions with a key of our namespace that no logged operation carries
-- (the unclaimed rows of purpleflea.payouts.classification that have a key).
-- DataFusion SQL, run by `pfsync reconcile`; not deployed to Databricks.
-- Parameter: $key_prefix, the namespace's key prefix (`pfsync:<namespace>:`), bound as a value so a
-- namespace is never spliced into the SQL text. The prefix test is written with left() because DataFusion
-- spells it starts_with and Spark startswith; LIKE would read a `_` in the namespace as a wildcard.
SELECT tx_ids AS tx_id, kind, provider_agent_id AS agent_id, provider_amount_usd AS amount_usd, idempotency_key
FROM purpleflea.payouts.classification
WHERE settled = false AND operation_id IS NULL
  AND left(idempotency_key, char_length($key_prefix)) = $key_prefix
