-- operation_findings: the classified operations that are findings, with what the log and the provider say.
-- Every finding is unsettled, so only that partition is read.
-- DataFusion SQL over purpleflea.payouts.classification, run by `pfsync reconcile` after it wrote it.
SELECT class, operation_id, kind, status, idempotency_key, tx_ids, agent_id, provider_agent_id, amount_usd,
       provider_amount_usd, transactions, log_tx_id
FROM purpleflea.payouts.classification
WHERE settled = false AND operation_id IS NOT NULL AND class NOT IN ('matched', 'in_progress')
