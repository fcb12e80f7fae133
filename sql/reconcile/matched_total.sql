-- matched_total: the provider money of completed operations that matched the log, as one row. The sum of
-- no rows is zero dollars, said here rather than defaulted in Rust: a NULL reaching the code is an error.
-- DataFusion SQL over the `classified` table that `pfsync reconcile` registers from classified.sql.
SELECT coalesce(sum(t_amount), 0) AS amount_usd
FROM classified
WHERE class = 'matched' AND status = 'completed'
