-- purpleflea.ledger.gaps: what a live sync could not read. The provider lists an agent's last 50 ledger
-- entries only: an agent that writes more between two syncs leaves a gap, recorded here (never skipped
-- silently) and reported by every reconcile as a ledger_gap finding. Kept a year.
-- Mirrors LEDGER_GAPS in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ledger.gaps (
  agent_id STRING NOT NULL COMMENT 'Agent whose ledger has the gap',
  kind STRING NOT NULL COMMENT 'window_full | chain_break',
  after_entry_id STRING NOT NULL COMMENT 'Newest entry stored before the gap',
  after_balance_usd DECIMAL(18,6) NOT NULL COMMENT 'Balance after that entry',
  before_entry_id STRING NOT NULL COMMENT 'Oldest entry read after the gap',
  before_balance_usd DECIMAL(18,6) NOT NULL COMMENT 'Balance before that entry (its balance_after less its own movement)',
  detail STRING NOT NULL COMMENT 'What was found, in words',
  run_id STRING NOT NULL COMMENT 'Sync run that found it',
  detected_at TIMESTAMP NOT NULL COMMENT 'When'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/ledger/gaps'
COMMENT 'Gaps in the synced ledger of an agent: entries written between two syncs that the provider no longer lists'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
