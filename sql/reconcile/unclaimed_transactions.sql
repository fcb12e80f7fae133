-- unclaimed_transactions: the provider transactions no logged operation claims by its key, as the rows of
-- purpleflea.payouts.classification a full rebuild writes for them (operation_id NULL, never settled): a
-- transaction with a key no logged operation carries (unlogged_at_provider when the key is of this
-- namespace), and a payout with no key, once per completed logged payout of the same agent, amount and
-- reason (unattributed_payout: likely paid twice), or once when it repeats none; the transaction a payout's log
-- recorded as its own outcome (its tx_id: a provider that keeps no keys, or a person's `pfsync resolve`) is
-- that payout, not a repeat of it. A later run matches the
-- transactions it reads against these rows instead of the whole ledger.
-- DataFusion SQL, run by `pfsync reconcile` when it rebuilds (src/reconcile/rebuild.rs; once per bucket of a large
-- history, passes.rs); not deployed.
-- Parameter: $key_prefix, the namespace's key prefix (`pfsync:<namespace>:`), bound as a value so a
-- namespace is never spliced into the SQL text. The prefix test is written with left() because DataFusion
-- spells it starts_with and Spark startswith; LIKE would read a `_` in the namespace as a wildcard.
WITH ops AS (SELECT operation_id, kind, status, agent_id, amount_usd, reason, idempotency_key, tx_id FROM purpleflea.payouts.status),
unclaimed AS (
  SELECT t.*, CAST(NULL AS STRING) AS repeats
  FROM purpleflea.ledger.transactions t
  LEFT JOIN (SELECT DISTINCT idempotency_key FROM ops) o ON o.idempotency_key = t.idempotency_key
  WHERE t.idempotency_key IS NOT NULL AND o.idempotency_key IS NULL
  UNION ALL
  SELECT t.*, p.operation_id AS repeats
  FROM purpleflea.ledger.transactions t
  LEFT JOIN ops p
    ON p.kind = 'payout' AND p.status = 'completed'
   AND p.agent_id = t.agent_id AND p.amount_usd = t.amount_usd AND p.reason = t.reference
   AND (p.tx_id IS NULL OR p.tx_id <> t.tx_id)
  WHERE t.kind = 'payout' AND t.idempotency_key IS NULL
)
SELECT CAST(NULL AS STRING) AS operation_id, kind, CAST(NULL AS STRING) AS status, CAST(NULL AS INT) AS attempts,
       CAST(NULL AS STRING) AS agent_id, CAST(NULL AS DECIMAL(18,2)) AS amount_usd, CAST(NULL AS STRING) AS reason,
       idempotency_key, CAST(NULL AS STRING) AS log_tx_id, CAST(NULL AS TIMESTAMP) AS first_recorded_at,
       CAST(NULL AS TIMESTAMP) AS last_recorded_at, CAST(NULL AS STRING) AS matched_by,
       CAST(1 AS BIGINT) AS transactions, tx_id AS tx_ids, agent_id AS provider_agent_id,
       amount_usd AS provider_amount_usd, created_date AS provider_date, reference AS provider_reference,
       repeats AS repeats_operation_id,
       CASE WHEN repeats IS NOT NULL THEN 'unattributed_payout'
            WHEN left(idempotency_key, char_length($key_prefix)) = $key_prefix THEN 'unlogged_at_provider'
       END AS class,
       false AS settled
FROM unclaimed
