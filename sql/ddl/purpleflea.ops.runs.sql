-- purpleflea.ops.runs: one summary row per pfsync step run. Mirrors RUNS in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ops.runs (
  run_id STRING NOT NULL COMMENT 'Run id (--run-id; a Databricks job passes its own)',
  step STRING NOT NULL COMMENT 'sync | payouts | reconcile | maintain',
  started_at TIMESTAMP NOT NULL COMMENT 'Step start',
  finished_at TIMESTAMP NOT NULL COMMENT 'Step end',
  rows BIGINT COMMENT 'Rows or operations handled',
  amount_usd DECIMAL(18,2) COMMENT 'Money moved (payouts) or matched (reconcile)',
  counts STRING COMMENT 'Counts per outcome or finding class, as a JSON object',
  exit_code INT NOT NULL COMMENT 'Exit code the step ended with'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/ops/runs'
COMMENT 'One row per pfsync step run: when, how much, what it found, how it exited'
TBLPROPERTIES (
  'delta.appendOnly' = 'true'
);
