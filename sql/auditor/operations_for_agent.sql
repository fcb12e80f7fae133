-- Every payout and escrow operation for one agent, with the provider transaction it matched.
-- Replace 'agent-000001' with the agent under review.
SELECT s.operation_id,
       s.kind,
       s.status,
       s.amount_usd,
       s.reason,
       s.idempotency_key,
       t.tx_id,
       t.kind AS tx_kind,
       t.amount_usd AS tx_amount_usd,
       t.created_at AS paid_at
FROM purpleflea.payouts.status s
LEFT JOIN purpleflea.ledger.transactions t ON t.idempotency_key = s.idempotency_key
WHERE s.agent_id = 'agent-000001' OR t.agent_id = 'agent-000001'
ORDER BY s.first_recorded_at, s.operation_id
