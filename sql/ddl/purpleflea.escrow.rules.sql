-- purpleflea.escrow.rules: metric rules (the seed's EscrowReleaseCallback as data): release an escrow when an
-- MLflow metric crosses a threshold, or dispute it when a deadline passes without a hit. pfsync's rules step
-- executes each rule at most once, ever (operation id rule:<rule_id>). Mirrors ESCROW_RULES.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.escrow.rules (
  rule_id STRING NOT NULL COMMENT 'Unique id of the rule (NOT NULL, PK); its operation id is rule:<rule_id>',
  escrow_id STRING COMMENT 'Escrow to release or dispute',
  create_action_id STRING COMMENT 'Or: the create in purpleflea.escrow.actions whose escrow it is',
  mlflow_run_id STRING COMMENT 'MLflow run whose metric is watched',
  experiment_id STRING COMMENT 'Or: any run of this MLflow experiment (with filter)',
  run_filter STRING COMMENT 'With experiment_id: a filter string as mlflow.search_runs takes it',
  runs_since TIMESTAMP COMMENT 'With experiment_id: only runs started at or after this count (null: runs started after pfsync first read the rule)',
  metric_key STRING COMMENT 'Metric to watch, e.g. val_accuracy',
  threshold DOUBLE COMMENT 'Value the metric is compared with',
  direction STRING COMMENT '> | >= | < | <= : the metric fires when metric DIRECTION threshold',
  deadline TIMESTAMP COMMENT 'Only metric values pfsync saw by then count, logged by then by their own time too (null: no deadline)',
  on_deadline STRING COMMENT 'nothing | dispute: what happens when the deadline passes without a hit',
  reason STRING COMMENT 'Why (recorded with the release or dispute)',
  requested_by STRING COMMENT 'Who or what wrote the rule'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/escrow/rules'
COMMENT 'Metric rules: release an escrow when an MLflow metric crosses a threshold; pfsync executes each rule at most once';
