-- previous_open: the findings the previous reconcile run left open (its rows without resolved_at), so this
-- run carries their first sighting forward or records them as resolved.
-- DataFusion SQL, run by `pfsync reconcile`; the auditors' version is the purpleflea.payouts.open_findings view.
SELECT finding_key, class, operation_id, kind, idempotency_key, tx_ids, agent_id, expected_agent_id,
       actual_agent_id, expected_amount_usd, actual_amount_usd, detail, first_seen_run, first_seen_at
FROM purpleflea.payouts.reconciliation
WHERE resolved_at IS NULL
  AND recorded_at = (SELECT max(recorded_at) FROM purpleflea.payouts.reconciliation)
