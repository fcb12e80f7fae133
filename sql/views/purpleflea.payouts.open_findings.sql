-- purpleflea.payouts.open_findings: the findings the latest reconcile run left open, with how long each
-- has been open. Every run rewrites its open findings (first_seen carried forward) and writes a row with
-- resolved_at for each finding that disappeared, so the latest run's rows are the current state.
CREATE OR REPLACE VIEW purpleflea.payouts.open_findings AS
SELECT r.class,
       r.operation_id,
       r.kind,
       r.tx_ids,
       r.agent_id,
       r.expected_agent_id,
       r.actual_agent_id,
       r.expected_amount_usd,
       r.actual_amount_usd,
       r.detail,
       r.first_seen_run,
       r.first_seen_at,
       r.run_id AS last_seen_run,
       r.recorded_at AS last_seen_at
FROM purpleflea.payouts.reconciliation r
WHERE r.resolved_at IS NULL
  AND r.recorded_at = (SELECT max(recorded_at) FROM purpleflea.payouts.reconciliation)
