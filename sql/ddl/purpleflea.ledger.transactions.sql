-- purpleflea.ledger.transactions: append-only copy of the provider's transaction list, partitioned by
-- day. Mirrors TRANSACTIONS in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- Kept a year: delta.deletedFileRetentionDuration is the floor pfsync maintain vacuums to.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ledger.transactions (
  tx_id STRING NOT NULL COMMENT 'Purple Flea transaction identifier (NOT NULL, PK)',
  kind STRING NOT NULL COMMENT 'payout | escrow_lock | escrow_release | escrow_refund | faucet',
  agent_id STRING NOT NULL COMMENT 'Agent whose balance the transaction moves',
  counterparty_agent_id STRING COMMENT 'Other agent of an escrow transaction',
  amount_usd DECIMAL(18,2) NOT NULL COMMENT 'Amount in USD, exact cents, always positive (kind gives the direction)',
  idempotency_key STRING COMMENT 'Idempotency-Key the request carried (null when none)',
  reference STRING COMMENT 'Payout reason or escrow id',
  created_at TIMESTAMP NOT NULL COMMENT 'When the transaction happened at Purple Flea',
  created_date DATE NOT NULL COMMENT 'Day (UTC) of created_at; the partition column',
  synced_at TIMESTAMP NOT NULL COMMENT 'When pfsync appended this row'
)
USING DELTA
PARTITIONED BY (created_date)
LOCATION '<warehouse>/purpleflea/ledger/transactions'
COMMENT 'Purple Flea transaction ledger, append-only copy of purpleflea.com/api/transactions'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.enableChangeDataFeed' = 'false',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
