-- provider_transactions: how many provider transactions the ledger copy holds, as one row, from the daily
-- totals reconcile keeps (every transaction counts in its day and kind).
-- DataFusion SQL, run by `pfsync reconcile` after it wrote them.
SELECT coalesce(sum(transactions), 0) AS transactions
FROM purpleflea.ops.daily_totals
