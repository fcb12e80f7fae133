-- purpleflea.payouts.rejects: source rows refused before any money moved, with a code and message, one row
-- per version of a refused row (its id, kind, code and source_row): a later run that finds the row
-- unchanged counts it as refused before and records nothing. Mirrors REJECTS in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.payouts.rejects (
  operation_id STRING COMMENT 'payout_id or action_id as given (null when missing)',
  kind STRING NOT NULL COMMENT 'payout | escrow_create | escrow_release | escrow_dispute | escrow_action | escrow_rule',
  code STRING NOT NULL COMMENT 'Machine-readable reason (see README)',
  message STRING NOT NULL COMMENT 'What is wrong and what to fix',
  source_row STRING COMMENT 'The source row as JSON, clipped to 4 KiB (a clipped value ends with a digest of the whole)',
  run_id STRING NOT NULL COMMENT 'Run that first refused this version of the row',
  rejected_at TIMESTAMP NOT NULL COMMENT 'When'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/payouts/rejects'
COMMENT 'Pending payouts and escrow actions refused by validation, one row per version of a refused row'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
