-- previous_open: the findings the previous reconcile run left open (its rows without resolved_at), so this
-- run carries their first sighting forward or records them as resolved.
-- DataFusion SQL, run by `pfsync reconcile`; the auditors' version is the purpleflea.payouts.open_findings view.
SELECT *
FROM purpleflea.payouts.reconciliation
WHERE resolved_at IS NULL
  AND recorded_at = (SELECT max(recorded_at) FROM purpleflea.payouts.reconciliation)
