-- daily_totals: provider money per day and kind, as a full rebuild computes it; other runs add the
-- transactions appended since (src/reconcile/totals.rs).
-- DataFusion SQL, run by `pfsync reconcile` when it rebuilds purpleflea.ops.daily_totals.
SELECT created_date AS day, kind, count(*) AS transactions, sum(amount_usd) AS amount_usd
FROM purpleflea.ledger.transactions
GROUP BY created_date, kind
