-- matched_total: the provider money of completed operations that matched the log, as one row: the sum of
-- the daily totals' matched money. The sum of no rows is zero dollars, said here rather than defaulted in
-- Rust: a NULL reaching the code is an error.
-- DataFusion SQL over purpleflea.ops.daily_totals, run by `pfsync reconcile` after it wrote them.
SELECT coalesce(sum(matched_usd), 0) AS amount_usd
FROM purpleflea.ops.daily_totals
