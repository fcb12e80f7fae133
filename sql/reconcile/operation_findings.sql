-- operation_findings: the classified operations that are findings, with what the log and the provider say.
-- DataFusion SQL over the `classified` table that `pfsync reconcile` registers from classified.sql.
SELECT class, operation_id, kind, status, idempotency_key, tx_ids, exp_agent, t_agent, exp_amount, t_amount, n,
       log_tx_id
FROM classified
WHERE class NOT IN ('matched', 'in_progress')
