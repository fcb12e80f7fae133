-- purpleflea.payouts.status: the current status of every operation in the payout log, one row each.
-- The same rules as src/payouts/state.rs: a `completed` event anywhere wins (money moved), then
-- `rejected`, then a person's `abandoned`; otherwise `never_ran` when a person found the latest attempt
-- never ran (the next run sends it again), `unknown` when the latest attempt's outcome was not known, else
-- `in_flight` (an intent with no outcome yet: the run is still going or died; the next run resolves it).
-- `decided_by` names the person of the latest decision, where one was recorded (`pfsync resolve`).
-- A rejected operation's error_code is its refusal's, never an earlier attempt's `unknown` code; otherwise
-- error_code is an `unknown` outcome's. Where overlapping runs logged different answers (two tx ids, two
-- codes), max() takes the greatest, as state.rs does; tests/it/status_view.rs checks the two agree.
-- One GROUP BY, no window: every event of an operation carries the same agent, amount and reason (an id
-- reused with other values is refused before it is logged), and run ids are UUID v7, so the greatest is
-- the latest. Portable SQL: runs on Databricks SQL and in `pfsync sql` / `pfsync status`.
CREATE OR REPLACE VIEW purpleflea.payouts.status AS
SELECT operation_id,
       max(kind) AS kind,
       CASE WHEN max(CASE WHEN event = 'completed' THEN 1 ELSE 0 END) = 1 THEN 'completed'
            WHEN max(CASE WHEN event = 'rejected' THEN 1 ELSE 0 END) = 1 THEN 'rejected'
            WHEN max(CASE WHEN event = 'abandoned' THEN 1 ELSE 0 END) = 1 THEN 'abandoned'
            WHEN max(CASE WHEN event = 'never_ran' THEN attempt END) = max(attempt) THEN 'never_ran'
            WHEN max(CASE WHEN event = 'unknown' THEN attempt END) = max(attempt) THEN 'unknown'
            ELSE 'in_flight' END AS status,
       max(attempt) AS attempts,
       max(agent_id) AS agent_id,
       max(counterparty_agent_id) AS counterparty_agent_id,
       max(amount_usd) AS amount_usd,
       max(reason) AS reason,
       max(idempotency_key) AS idempotency_key,
       max(CASE WHEN event = 'completed' THEN tx_id END) AS tx_id,
       max(escrow_id) AS escrow_id,
       coalesce(max(CASE WHEN event = 'rejected' THEN error_code END),
                max(CASE WHEN event = 'unknown' THEN error_code END)) AS error_code,
       coalesce(max(CASE WHEN event = 'rejected' THEN error_message END),
                max(CASE WHEN event = 'unknown' THEN error_message END)) AS error_message,
       max(decided_by) AS decided_by,
       max(run_id) AS last_run_id,
       min(recorded_at) AS first_recorded_at,
       max(recorded_at) AS last_recorded_at
FROM purpleflea.payouts.log
GROUP BY operation_id
