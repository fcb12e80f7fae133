-- Databricks only: the payout log as it was at a past version (time travel), e.g. before a run.
-- Find the version with DESCRIBE HISTORY purpleflea.payouts.log; the log keeps a year of history.
SELECT operation_id, kind, event, attempt, amount_usd, tx_id, recorded_at
FROM purpleflea.payouts.log VERSION AS OF 1
ORDER BY recorded_at
