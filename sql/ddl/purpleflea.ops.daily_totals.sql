-- purpleflea.ops.daily_totals: provider money per day and kind, kept by reconcile from what changed and
-- rewritten by each run that changes it.
-- Mirrors DAILY_TOTALS in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ops.daily_totals (
  day DATE NOT NULL COMMENT 'Day (UTC)',
  kind STRING NOT NULL COMMENT 'payout | escrow_lock | escrow_release | escrow_refund | faucet',
  transactions BIGINT NOT NULL COMMENT 'Provider transactions',
  amount_usd DECIMAL(18,2) NOT NULL COMMENT 'Their total, exact cents',
  matched_usd DECIMAL(18,2) NOT NULL COMMENT 'Of which matched to a completed pfsync operation',
  computed_run_id STRING NOT NULL COMMENT 'Reconcile run that computed the row'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/ops/daily_totals'
COMMENT 'Provider transactions per day and kind, and the part matched to the pfsync log; rewritten by reconcile';
