-- A run's full trail: its step summaries, every log event it wrote, and every finding it recorded.
-- Replace 'RUN_ID' with the run (a Databricks job passes {{job.run_id}} as --run-id).
SELECT 'step' AS what, step AS subject, CAST(exit_code AS STRING) AS detail, started_at AS at
FROM purpleflea.ops.runs WHERE run_id = 'RUN_ID'
UNION ALL
SELECT 'log', operation_id, concat(kind, ' ', event, ' attempt ', CAST(attempt AS STRING)), recorded_at
FROM purpleflea.payouts.log WHERE run_id = 'RUN_ID'
UNION ALL
SELECT 'finding', coalesce(operation_id, tx_ids, agent_id), concat(class, ': ', detail), recorded_at
FROM purpleflea.payouts.reconciliation WHERE run_id = 'RUN_ID'
ORDER BY at
