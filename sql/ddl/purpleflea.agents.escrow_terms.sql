-- purpleflea.agents.escrow_terms: the live provider's escrows, what purpleflea.agents.escrows has no column
-- for, exact to six decimals (the 1% commission: 12.34 -> 0.1234). A table of its own, not new columns on
-- purpleflea.agents.escrows: pfsync refuses a table whose schema differs from its spec and never rewrites
-- one, so widening that table would stop every existing warehouse. Upserted by escrow_id, like escrows.
-- Mirrors ESCROW_TERMS in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.agents.escrow_terms (
  escrow_id STRING NOT NULL COMMENT 'Purple Flea escrow identifier (NOT NULL, PK); its row in purpleflea.agents.escrows',
  creator_agent_id STRING NOT NULL COMMENT 'Agent that created and funded the escrow',
  counterparty_agent_id STRING NOT NULL COMMENT 'Agent paid on release',
  status STRING NOT NULL COMMENT 'funded | completed | released | disputed | refunded',
  amount_usd DECIMAL(18,6) NOT NULL COMMENT 'Escrowed amount in USD, six decimals',
  commission_usd DECIMAL(18,6) NOT NULL COMMENT 'Purple Flea commission (1% of the amount, six decimals)',
  net_to_counterparty_usd DECIMAL(18,6) NOT NULL COMMENT 'Amount less commission: what a release credits, or a timeout refunds',
  timeout_hours BIGINT NOT NULL COMMENT 'Hours after creation when the timeout job refunds an unreleased escrow',
  created_at TIMESTAMP NOT NULL COMMENT 'When the escrow was created',
  auto_release_at TIMESTAMP NOT NULL COMMENT 'When the timeout job may refund it to the creator',
  completed_at TIMESTAMP COMMENT 'When the counterparty marked it complete',
  released_at TIMESTAMP COMMENT 'When it was released (or refunded by the timeout job)',
  disputed_at TIMESTAMP COMMENT 'When it was disputed (funds frozen for manual review)',
  last_synced_at TIMESTAMP COMMENT 'When pfsync last wrote this row'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/agents/escrow_terms'
COMMENT 'Live Purple Flea escrows: amounts exact to six decimals, commission, timeout and state times'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true'
);
