-- class_counts: how many operations ended in each class, matched and in_progress included.
-- DataFusion SQL over the `classified` table that `pfsync reconcile` registers from classified.sql.
SELECT class, count(*) AS operations
FROM classified
GROUP BY class
