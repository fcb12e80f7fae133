-- classified: every operation in the payout log (through the purpleflea.payouts.status view), joined to the
-- provider transactions by idempotency key first, then by the log's tx_id, and put in exactly one class.
-- DataFusion SQL, run by `pfsync reconcile` (src/reconcile/matching.rs), which caches the result as the
-- table `classified` that the other files in sql/reconcile/ read; not deployed to Databricks.
-- Parameter: $stale_before, a UTC timestamp (now minus --stale-after-secs).
-- tx_ids lists an operation's transactions in tx_id order, so a finding reads the same in every run and on
-- every engine. DataFusion orders string_agg only inside its arguments and Spark only WITHIN GROUP, so the
-- ids are collected, sorted and joined: the same spelling, and text, on both.
WITH ops AS (SELECT * FROM purpleflea.payouts.status),
tx AS (SELECT tx_id, kind, agent_id, amount_usd, idempotency_key, created_date FROM purpleflea.ledger.transactions),
by_key AS (
  SELECT o.operation_id, count(*) AS n, array_join(array_sort(array_agg(t.tx_id)), ',') AS tx_ids,
         min(t.agent_id) AS t_agent, min(t.amount_usd) AS t_amount, min(t.created_date) AS t_day
  FROM ops o JOIN tx t ON t.idempotency_key = o.idempotency_key
  GROUP BY o.operation_id
),
by_tx AS (
  SELECT o.operation_id, t.tx_id, t.agent_id AS t_agent, t.amount_usd AS t_amount, t.created_date AS t_day
  FROM ops o JOIN tx t ON t.tx_id = o.tx_id
),
joined AS (
  SELECT o.operation_id, o.kind, o.status, o.idempotency_key, o.agent_id AS exp_agent, o.amount_usd AS exp_amount,
         o.tx_id AS log_tx_id, o.last_recorded_at,
         CASE WHEN k.n IS NOT NULL THEN k.n WHEN b.tx_id IS NOT NULL THEN 1 ELSE 0 END AS n,
         coalesce(k.tx_ids, b.tx_id) AS tx_ids,
         coalesce(k.t_agent, b.t_agent) AS t_agent,
         coalesce(k.t_amount, b.t_amount) AS t_amount,
         coalesce(k.t_day, b.t_day) AS t_day
  FROM ops o
  LEFT JOIN by_key k ON k.operation_id = o.operation_id
  LEFT JOIN by_tx b ON b.operation_id = o.operation_id
)
SELECT *,
  CASE
    WHEN status = 'completed' AND n = 0 THEN 'missing_at_provider'
    WHEN n > 1 THEN 'duplicate_at_provider'
    -- Refused, or a person decided it is not to be paid (`abandoned`): nothing was to move.
    WHEN status IN ('rejected', 'abandoned') AND n >= 1 THEN 'status_mismatch'
    WHEN status IN ('rejected', 'abandoned') THEN 'matched'
    -- A person found the latest attempt never ran: the next payouts run sends it.
    WHEN status = 'never_ran' THEN 'in_progress'
    WHEN status IN ('unknown', 'in_flight') AND last_recorded_at < $stale_before THEN 'stale_unknown'
    -- Young and not final, even when the provider already shows the money moved: a payouts run is between
    -- the API's answer and its log commit, or died there; the next run records it by lookup. Flagging it
    -- would raise a finding that a concurrent run clears seconds later.
    WHEN status IN ('unknown', 'in_flight') THEN 'in_progress'
    WHEN exp_amount IS NOT NULL AND t_amount <> exp_amount THEN 'amount_mismatch'
    WHEN exp_agent IS NOT NULL AND t_agent <> exp_agent THEN 'agent_mismatch'
    ELSE 'matched'
  END AS class
FROM joined
