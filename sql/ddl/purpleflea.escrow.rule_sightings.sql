-- purpleflea.escrow.rule_sightings: when pfsync's rules step first saw a metric rule, and the metric value
-- that fired it, by its own clock (MLflow takes a value's time from the client that logs it, so deadlines
-- are judged by these times). Append-only. Mirrors RULE_SIGHTINGS in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.escrow.rule_sightings (
  rule_id STRING NOT NULL COMMENT 'Rule (purpleflea.escrow.rules)',
  sighting STRING NOT NULL COMMENT 'rule (the rule first read) | hit (a metric value that satisfies the rule)',
  mlflow_run_id STRING COMMENT 'Hit: the MLflow run that logged the value',
  metric_key STRING COMMENT 'Hit: the metric',
  step BIGINT COMMENT 'Hit: the step the value was logged at',
  value DOUBLE COMMENT 'Hit: the value',
  logged_at TIMESTAMP COMMENT 'Hit: the time the MLflow client gave the value (never trusted for a deadline)',
  seen_at TIMESTAMP NOT NULL COMMENT 'When pfsync first read it',
  run_id STRING NOT NULL COMMENT 'pfsync run that saw it'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/escrow/rule_sightings'
COMMENT 'When pfsync first saw a metric rule, and the metric value that fired it, by the clock of pfsync: deadlines are judged by these times, not by the times MLflow clients give'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
