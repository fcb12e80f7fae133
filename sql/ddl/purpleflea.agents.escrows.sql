-- purpleflea.agents.escrows: one row per escrow, its current state, upserted by escrow_id.
-- With [provider] kind = "live": the escrows the payout log names and [provider] escrow_ids, read by id;
-- buyer = creator, seller = counterparty, metadata NULL (the service keeps none), tx_id <esc>_release or
-- <esc>_timeout; the commission and exact amounts are in purpleflea.agents.escrow_terms.
-- Mirrors ESCROWS in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.agents.escrows (
  escrow_id STRING NOT NULL COMMENT 'Purple Flea escrow identifier (NOT NULL, PK)',
  buyer_agent_id STRING NOT NULL COMMENT 'Agent whose funds are locked',
  seller_agent_id STRING NOT NULL COMMENT 'Agent paid on release',
  amount_usd DECIMAL(18,2) NOT NULL COMMENT 'Escrowed amount in USD, exact cents',
  description STRING COMMENT 'Description given at creation',
  metadata STRING COMMENT 'Metadata object given at creation, as JSON text',
  status STRING NOT NULL COMMENT 'funded | released | refunded; the live provider also completed | disputed',
  created_at TIMESTAMP NOT NULL COMMENT 'When the escrow was created',
  updated_at TIMESTAMP NOT NULL COMMENT 'Last change at Purple Flea',
  tx_id STRING COMMENT 'Release or refund transaction (null while funded)',
  last_synced_at TIMESTAMP COMMENT 'When pfsync last wrote this row'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/agents/escrows'
COMMENT 'Purple Flea escrows (current state) synced from purpleflea.com/api'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true'
);
