-- The seed's labeling bounty (create_labeling_bounty + quality_check_and_release) as escrow actions, for
-- `pfsync payouts --actions-sql "$(cat sql/examples/labeling_bounty.sql)" --register label_tasks=... --register
-- label_submissions=...`: an escrow per task, funded by databricks-pipeline-orchestrator; once the task's
-- labels are in (label_tasks.labels_done), released when at least 80% of its labels have confidence >= 0.85,
-- disputed (refunded) otherwise. Each action id is derived from the task, so a rerun, a retry or a full
-- refresh of the pipeline creates, releases or disputes nothing twice.
-- label_tasks(task_id, labeler_agent_id, reward_usd, labels_done), label_submissions(task_id, label_id, confidence)
SELECT concat('bounty-', t.task_id) AS action_id,
       'create' AS action,
       CAST(NULL AS STRING) AS escrow_id,
       CAST(NULL AS STRING) AS create_action_id,
       'databricks-pipeline-orchestrator' AS buyer_agent_id,
       t.labeler_agent_id AS seller_agent_id,
       CAST(t.reward_usd AS STRING) AS amount_usd,
       concat('Data labeling task ', t.task_id) AS description,
       concat('{"task_id":"', t.task_id, '","source":"databricks-workflow"}') AS metadata,
       concat('labeling bounty ', t.task_id) AS reason
FROM label_tasks t
UNION ALL
SELECT concat('qc-', q.task_id) AS action_id,
       CASE WHEN q.quality_rate >= 0.80 THEN 'release' ELSE 'dispute' END AS action,
       CAST(NULL AS STRING) AS escrow_id,
       concat('bounty-', q.task_id) AS create_action_id,
       CAST(NULL AS STRING) AS buyer_agent_id,
       CAST(NULL AS STRING) AS seller_agent_id,
       CAST(NULL AS STRING) AS amount_usd,
       CAST(NULL AS STRING) AS description,
       CAST(NULL AS STRING) AS metadata,
       concat('Quality rate ', CAST(round(q.quality_rate * 100, 1) AS STRING), '% ',
              CASE WHEN q.quality_rate >= 0.80 THEN 'passed threshold' ELSE 'below 80% threshold' END) AS reason
FROM (
  SELECT t.task_id,
         CASE WHEN count(s.label_id) > 0
              THEN CAST(sum(CASE WHEN s.confidence >= 0.85 THEN 1 ELSE 0 END) AS DOUBLE) / count(s.label_id)
              ELSE 0.0 END AS quality_rate
  FROM label_tasks t LEFT JOIN label_submissions s ON s.task_id = t.task_id
  WHERE t.labels_done = 'true'
  GROUP BY t.task_id
) q
