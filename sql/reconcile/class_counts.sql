-- class_counts: how many operations are in each class, matched and in_progress included: the unsettled
-- operations by class, and the settled ones (every one matched) counted from the files' statistics.
-- DataFusion SQL over purpleflea.payouts.classification, run by `pfsync reconcile` after it wrote it.
SELECT class, count(*) AS operations
FROM purpleflea.payouts.classification
WHERE settled = false AND operation_id IS NOT NULL
GROUP BY class
UNION ALL
SELECT 'matched' AS class, count(*) AS operations
FROM purpleflea.payouts.classification
WHERE settled = true
