-- purpleflea.payouts.status: the current status of every operation in the payout log, one row each.
-- The same rules as src/payouts/state.rs: a `completed` event anywhere wins (money moved), then
-- `rejected`; otherwise `unknown` when the latest attempt's outcome was not known, else `in_flight`
-- (an intent with no outcome yet: the run is still going or died; the next run resolves it by lookup).
-- Portable SQL (window functions, CASE): runs on Databricks SQL and in `pfsync sql` / `pfsync status`.
CREATE OR REPLACE VIEW purpleflea.payouts.status AS
WITH per_op AS (
  SELECT operation_id,
         MAX(CASE WHEN event = 'completed' THEN 1 ELSE 0 END) AS any_completed,
         MAX(CASE WHEN event = 'rejected' THEN 1 ELSE 0 END) AS any_rejected,
         MAX(attempt) AS attempts,
         MIN(recorded_at) AS first_recorded_at,
         MAX(recorded_at) AS last_recorded_at
  FROM purpleflea.payouts.log
  GROUP BY operation_id
),
latest AS (
  SELECT l.*,
         ROW_NUMBER() OVER (
           PARTITION BY l.operation_id
           ORDER BY CASE l.event WHEN 'completed' THEN 0 WHEN 'rejected' THEN 1 ELSE 2 END,
                    l.attempt DESC,
                    CASE l.event WHEN 'unknown' THEN 0 ELSE 1 END,
                    l.recorded_at DESC
         ) AS rn
  FROM purpleflea.payouts.log l
)
SELECT p.operation_id,
       l.kind,
       CASE WHEN p.any_completed = 1 THEN 'completed'
            WHEN p.any_rejected = 1 THEN 'rejected'
            WHEN l.event = 'unknown' THEN 'unknown'
            ELSE 'in_flight' END AS status,
       p.attempts,
       l.agent_id,
       l.counterparty_agent_id,
       l.amount_usd,
       l.reason,
       l.idempotency_key,
       l.tx_id,
       l.escrow_id,
       l.error_code,
       l.error_message,
       l.run_id AS last_run_id,
       p.first_recorded_at,
       p.last_recorded_at
FROM per_op p
JOIN latest l ON l.operation_id = p.operation_id AND l.rn = 1
