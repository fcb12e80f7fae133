-- daily_totals: provider money per day and kind.
-- DataFusion SQL, run by `pfsync reconcile`, which rewrites purpleflea.ops.daily_totals from it.
SELECT created_date AS day, kind, count(*) AS transactions, sum(amount_usd) AS amount_usd
FROM purpleflea.ledger.transactions
GROUP BY created_date, kind
