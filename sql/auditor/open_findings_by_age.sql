-- Open reconciliation findings, oldest first, with how long each has been open.
SELECT class,
       operation_id,
       tx_ids,
       agent_id,
       expected_amount_usd,
       actual_amount_usd,
       detail,
       first_seen_run,
       first_seen_at,
       last_seen_at - first_seen_at AS open_for
FROM purpleflea.payouts.open_findings
ORDER BY first_seen_at, class, operation_id
