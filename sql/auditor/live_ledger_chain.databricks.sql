-- Live provider: where the synced copy of a held agent's ledger breaks its balance chain (each entry's
-- balance before it, balance_after less its own movement, must be the previous entry's balance_after), next
-- to the gaps the syncs recorded. Every row here is also a ledger_gap finding of reconcile.
-- Databricks SQL (also valid Spark SQL); ledger_seq orders entries within the whole seconds of created_at.
WITH chain AS (
  SELECT agent_id, entry_id, ledger_seq, created_at, balance_after_usd,
         CASE WHEN type = 'debit' THEN balance_after_usd + amount_usd ELSE balance_after_usd - amount_usd END
           AS balance_before_usd,
         LAG(entry_id) OVER (PARTITION BY agent_id ORDER BY ledger_seq) AS previous_entry_id,
         LAG(balance_after_usd) OVER (PARTITION BY agent_id ORDER BY ledger_seq) AS previous_balance_after_usd
  FROM purpleflea.ledger.entries
)
SELECT c.agent_id, c.previous_entry_id, c.previous_balance_after_usd, c.entry_id, c.balance_before_usd,
       c.balance_before_usd - c.previous_balance_after_usd AS unexplained_usd, c.created_at,
       g.kind AS recorded_gap, g.detected_at
FROM chain c
LEFT JOIN purpleflea.ledger.gaps g
  ON g.agent_id = c.agent_id AND g.after_entry_id = c.previous_entry_id AND g.before_entry_id = c.entry_id
WHERE c.previous_entry_id IS NOT NULL AND c.balance_before_usd <> c.previous_balance_after_usd
ORDER BY c.agent_id, c.ledger_seq
