-- unattributed_payouts: keyless provider payouts equal (agent, amount, reason) to a completed logged payout:
-- paid by hand or by another path, most likely a second payment. One row per pair, as
-- purpleflea.payouts.classification holds them.
-- DataFusion SQL, run by `pfsync reconcile`; not deployed to Databricks.
SELECT tx_ids AS tx_id, provider_agent_id AS agent_id, provider_amount_usd AS amount_usd,
       provider_reference AS reference, repeats_operation_id AS operation_id
FROM purpleflea.payouts.classification
WHERE settled = false AND operation_id IS NULL AND repeats_operation_id IS NOT NULL
