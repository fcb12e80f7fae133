-- unattributed_payouts: keyless provider payouts equal (agent, amount, reason) to a completed logged payout:
-- paid by hand or by another path, most likely a second payment. The transaction the log recorded as the
-- payout's own outcome (its tx_id: a provider that keeps no keys, or a person's `pfsync resolve completed`) is
-- that payout, not a repeat of it.
-- DataFusion SQL, run by `pfsync reconcile`; not deployed to Databricks.
SELECT t.tx_id, t.agent_id, t.amount_usd, t.reference, s.operation_id
FROM purpleflea.ledger.transactions t
JOIN purpleflea.payouts.status s
  ON s.kind = 'payout' AND s.status = 'completed'
 AND s.agent_id = t.agent_id AND s.amount_usd = t.amount_usd AND s.reason = t.reference
WHERE t.kind = 'payout' AND t.idempotency_key IS NULL AND (s.tx_id IS NULL OR s.tx_id <> t.tx_id)
