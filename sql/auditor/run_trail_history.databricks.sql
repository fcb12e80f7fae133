-- Databricks only: which commits a run made to the payout log (the commit info carries pfsync.run_id).
DESCRIBE HISTORY purpleflea.payouts.log
