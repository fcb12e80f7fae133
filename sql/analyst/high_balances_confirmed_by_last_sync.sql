-- Agents with high balances ready for payout, with the guide's "synced in the last hour" read as "confirmed
-- by a sync that finished cleanly in the last hour". An incremental sync rewrites only the wallets that
-- changed, so last_synced_at is when a balance last changed, and the guide's query verbatim
-- (high_balances_ready_for_payout.sql) leaves out every wallet whose balance did not change in the hour.
-- Runs on Databricks SQL and through `pfsync sql`.
SELECT w.agent_id, w.wallet_address, ROUND(w.balance_usd, 2) AS balance_usd, w.active_escrow_count,
  ROUND(w.total_earned_usd, 2) AS total_earned_usd
FROM purpleflea.agents.wallets w
CROSS JOIN purpleflea.agents.wallet_freshness f
WHERE w.balance_usd > 100 AND f.last_clean_sync_at >= CURRENT_TIMESTAMP() - INTERVAL 1 HOUR
ORDER BY total_earned_usd DESC
LIMIT 50
