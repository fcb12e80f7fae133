-- refused_rows: source rows validation refused before any money moved (purpleflea.payouts.rejects), one line
-- per row and reason with how often and when it was refused, newest first: the report's "Refused rows".
-- DataFusion SQL, run by `pfsync reconcile` when the rejects table exists; not deployed.
SELECT operation_id, kind, code, max(message) AS message, count(*) AS refusals,
       min(rejected_at) AS first_refused_at, max(rejected_at) AS last_refused_at
FROM purpleflea.payouts.rejects
GROUP BY operation_id, kind, code
ORDER BY last_refused_at DESC, operation_id ASC NULLS LAST, kind, code
