-- own_operations: pfsync's own operations grouped by the day (UTC) of their last log event, kind, status and
-- class, with the money the log gives them: what the report draws as "paid out by pfsync vs matched at the
-- provider" (completed, and completed and matched) and counts as money at risk (not final; past the stale
-- threshold, for a person). The provider's other money (opening balances, other payers) is not here.
-- DataFusion SQL over purpleflea.payouts.classification, run by `pfsync reconcile` after it wrote it.
SELECT CAST(last_recorded_at AS DATE) AS day, kind, status, class,
       count(*) AS operations, sum(amount_usd) AS amount_usd
FROM purpleflea.payouts.classification
WHERE operation_id IS NOT NULL
GROUP BY CAST(last_recorded_at AS DATE), kind, status, class
ORDER BY day, kind, status, class
