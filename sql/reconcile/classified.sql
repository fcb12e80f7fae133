-- classified: every operation in the payout log (through the purpleflea.payouts.status view), joined to the
-- provider transactions by idempotency key first, then by the log's tx_id, and put in exactly one class: the
-- operations' rows of purpleflea.payouts.classification as a full rebuild writes them (settled: matched,
-- final, not read again until new data concerns it).
-- DataFusion SQL, run by `pfsync reconcile` when it rebuilds (`--full`, a first run, or history it cannot read
-- as appends) under a memory limit, spilling to disk, once per bucket of operations when the history is
-- large (src/reconcile/rebuild.rs, passes.rs). Other runs apply the same
-- rules to what changed (src/reconcile/classify.rs, merge.rs); a property test holds the two equal, row for
-- row. Not deployed to Databricks.
-- Parameter: $stale_before, a UTC timestamp (now minus --stale-after-secs).
-- tx_ids lists an operation's transactions in tx_id order, so a finding reads the same in every run and on
-- every engine. DataFusion orders string_agg only inside its arguments and Spark only WITHIN GROUP, so the
-- ids are collected, sorted and joined: the same spelling, and text, on both.
WITH ops AS (SELECT * FROM purpleflea.payouts.status),
tx AS (SELECT tx_id, agent_id, amount_usd, idempotency_key, created_date FROM purpleflea.ledger.transactions),
by_key AS (
  SELECT idempotency_key, count(*) AS n, array_join(array_sort(array_agg(tx_id)), ',') AS tx_ids,
         min(agent_id) AS t_agent, min(amount_usd) AS t_amount, min(created_date) AS t_day
  FROM tx
  WHERE idempotency_key IS NOT NULL
  GROUP BY idempotency_key
),
joined AS (
  SELECT o.operation_id, o.kind, o.status, o.attempts, o.agent_id, o.amount_usd, o.reason, o.idempotency_key,
         o.tx_id AS log_tx_id, o.first_recorded_at, o.last_recorded_at,
         CASE WHEN k.n IS NOT NULL THEN 'key' WHEN b.tx_id IS NOT NULL THEN 'tx_id' END AS matched_by,
         CASE WHEN k.n IS NOT NULL THEN k.n WHEN b.tx_id IS NOT NULL THEN 1 ELSE 0 END AS transactions,
         coalesce(k.tx_ids, b.tx_id) AS tx_ids,
         coalesce(k.t_agent, b.agent_id) AS provider_agent_id,
         coalesce(k.t_amount, b.amount_usd) AS provider_amount_usd,
         coalesce(k.t_day, b.created_date) AS provider_date
  FROM ops o
  LEFT JOIN by_key k ON k.idempotency_key = o.idempotency_key
  LEFT JOIN tx b ON b.tx_id = o.tx_id
),
classed AS (
  SELECT *,
    CASE
      WHEN status = 'completed' AND transactions = 0 THEN 'missing_at_provider'
      WHEN transactions > 1 THEN 'duplicate_at_provider'
      -- Refused, or a person decided it is not to be paid (`abandoned`): nothing was to move.
      WHEN status IN ('rejected', 'abandoned') AND transactions >= 1 THEN 'status_mismatch'
      WHEN status IN ('rejected', 'abandoned') THEN 'matched'
      -- A person found the latest attempt never ran: the next payouts run sends it.
      WHEN status = 'never_ran' THEN 'in_progress'
      WHEN status IN ('unknown', 'in_flight') AND last_recorded_at < $stale_before THEN 'stale_unknown'
      -- Young and not final, even when the provider already shows the money moved: a payouts run is between
      -- the API's answer and its log commit, or died there; the next run records it by lookup. Flagging it
      -- would raise a finding that a concurrent run clears seconds later.
      WHEN status IN ('unknown', 'in_flight') THEN 'in_progress'
      WHEN amount_usd IS NOT NULL AND provider_amount_usd <> amount_usd THEN 'amount_mismatch'
      WHEN agent_id IS NOT NULL AND provider_agent_id <> agent_id THEN 'agent_mismatch'
      ELSE 'matched'
    END AS class
  FROM joined
)
SELECT operation_id, kind, status, attempts, agent_id, amount_usd, reason, idempotency_key, log_tx_id,
       first_recorded_at, last_recorded_at, matched_by, transactions, tx_ids, provider_agent_id,
       provider_amount_usd, provider_date, CAST(NULL AS STRING) AS provider_reference,
       CAST(NULL AS STRING) AS repeats_operation_id, class, class = 'matched' AS settled
FROM classed
