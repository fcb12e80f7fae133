-- purpleflea.payouts.reconciliation: every reconcile finding, one row per open finding per run plus a row
-- with resolved_at when one disappears. Kept a year. Mirrors RECONCILIATION in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.payouts.reconciliation (
  run_id STRING NOT NULL COMMENT 'Reconcile run that wrote the row',
  finding_key STRING NOT NULL COMMENT 'Stable identity of the finding across runs (class and subject)',
  class STRING NOT NULL COMMENT 'amount_mismatch | agent_mismatch | missing_at_provider | unlogged_at_provider | duplicate_at_provider | status_mismatch | stale_unknown | unattributed_payout | balance_mismatch | ledger_gap | claimed_twice',
  operation_id STRING COMMENT 'payout_id or action_id',
  kind STRING COMMENT 'Operation kind or provider transaction kind',
  idempotency_key STRING COMMENT 'Key of the operation or transaction',
  tx_ids STRING COMMENT 'Provider transactions involved, comma-separated',
  agent_id STRING COMMENT 'Agent concerned',
  expected_agent_id STRING COMMENT 'Agent the log recorded',
  actual_agent_id STRING COMMENT 'Agent the provider shows',
  expected_amount_usd DECIMAL(18,2) COMMENT 'Amount the log (or the ledger) implies',
  actual_amount_usd DECIMAL(18,2) COMMENT 'Amount the provider (or the wallet) shows',
  detail STRING NOT NULL COMMENT 'What differs, in words',
  first_seen_run STRING NOT NULL COMMENT 'Run that first reported this finding',
  first_seen_at TIMESTAMP NOT NULL COMMENT 'When it was first reported',
  resolved_at TIMESTAMP COMMENT 'Set on the row that records that the finding disappeared',
  recorded_at TIMESTAMP NOT NULL COMMENT 'When this row was written (one value per run)'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/payouts/reconciliation'
COMMENT 'Reconciliation findings: one row per open finding per run, and one when a finding is resolved'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
