-- purpleflea.ledger.entries: the live provider's ledger of every agent whose key pfsync holds (GET
-- /auth/ledger), append-only, one row per entry id, amounts exact to six decimals (never through a float).
-- ledger_seq orders an agent's entries along the balance_after chain (created_at has whole seconds only).
-- Mirrors LEDGER_ENTRIES in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ledger.entries (
  entry_id STRING NOT NULL COMMENT 'Purple Flea ledger entry identifier (NOT NULL, PK)',
  agent_id STRING NOT NULL COMMENT 'Agent whose balance the entry moves (the key owner)',
  type STRING NOT NULL COMMENT 'credit | debit',
  amount_usd DECIMAL(18,6) NOT NULL COMMENT 'Amount in USD, six decimals, always positive (type gives the direction)',
  balance_after_usd DECIMAL(18,6) NOT NULL COMMENT 'The agent balance right after this entry, six decimals',
  reason STRING NOT NULL COMMENT 'payment_sent | payment_received | escrow_lock: esc_... | deposit | ...',
  reference STRING COMMENT 'pay_ id of a payment, escrow id of an escrow lock, ...',
  service STRING COMMENT 'Purple Flea service that wrote the entry',
  created_at TIMESTAMP NOT NULL COMMENT 'When the entry was written at Purple Flea (whole seconds)',
  ledger_seq BIGINT NOT NULL COMMENT 'Order within the agent ledger as pfsync read it: increasing along the balance_after chain',
  created_date DATE NOT NULL COMMENT 'Day (UTC) of created_at; the partition column',
  synced_at TIMESTAMP NOT NULL COMMENT 'When pfsync appended this row'
)
USING DELTA
PARTITIONED BY (created_date)
LOCATION '<warehouse>/purpleflea/ledger/entries'
COMMENT 'Live Purple Flea ledger entries of every agent whose key pfsync holds, append-only, amounts exact'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.enableChangeDataFeed' = 'false',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
