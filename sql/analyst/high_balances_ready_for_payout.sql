-- Agents with high balances ready for payout (the Purple Flea for Databricks guide's query, verbatim).
-- Runs on Databricks SQL and, unchanged, through `pfsync sql` (DataFusion).
SELECT agent_id, wallet_address, ROUND(balance_usd, 2) AS balance_usd, active_escrow_count,
  ROUND(total_earned_usd, 2) AS total_earned_usd
FROM purpleflea.agents.wallets
WHERE balance_usd > 100 AND last_synced_at >= CURRENT_TIMESTAMP() - INTERVAL 1 HOUR
ORDER BY total_earned_usd DESC
LIMIT 50
