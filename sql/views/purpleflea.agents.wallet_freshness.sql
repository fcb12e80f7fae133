-- purpleflea.agents.wallet_freshness: how current the synced wallets are, as one row. An incremental sync
-- rewrites only the wallets that changed, so a wallet's last_synced_at is when its balance last changed;
-- every balance is known current as of the last sync step that finished cleanly (exit code 0) in
-- purpleflea.ops.runs. Compare last_clean_sync_at with checked_at: the hourly job missed a run if they are
-- more than an hour apart. Portable SQL: runs on Databricks SQL and in `pfsync sql`.
CREATE OR REPLACE VIEW purpleflea.agents.wallet_freshness AS
SELECT w.wallets,
       w.last_changed_at,
       s.finished_at AS last_clean_sync_at,
       s.run_id AS last_clean_sync_run,
       current_timestamp() AS checked_at
FROM (SELECT count(*) AS wallets, max(last_synced_at) AS last_changed_at FROM purpleflea.agents.wallets) w
LEFT JOIN (
  SELECT run_id, finished_at FROM purpleflea.ops.runs
  WHERE step = 'sync' AND exit_code = 0
  ORDER BY finished_at DESC
  LIMIT 1
) s ON true
