-- implied_balances: per agent, the balance the synced transactions imply (escrow locks take money out), as a
-- full rebuild writes purpleflea.ledger.implied_balances; other runs add the transactions appended since.
-- DataFusion SQL, run by `pfsync reconcile` when it rebuilds (src/reconcile/rebuild.rs); not deployed.
SELECT agent_id, sum(CASE WHEN kind = 'escrow_lock' THEN -amount_usd ELSE amount_usd END) AS implied_usd,
       count(*) AS transactions
FROM purpleflea.ledger.transactions
GROUP BY agent_id
