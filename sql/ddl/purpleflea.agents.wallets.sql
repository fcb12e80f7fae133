-- purpleflea.agents.wallets: the guide's published wallet table, exactly (columns, types, comments,
-- change data feed). Mirrors WALLETS in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- balance_usd and total_earned_usd are DOUBLE because the published table says so; pfsync does no
-- arithmetic in them (money columns in every other table are DECIMAL(18,2)).
-- With [provider] kind = "live" there is one row per held key: balance_usd from GET /auth/balance,
-- referral_code from GET /auth/referral/code; NULL where the casino has no such data: wallet_address (a
-- balance, not an on-chain wallet), active_escrow_count (no escrow list), total_earned_usd (its lifetime
-- figures are deposits, wagers, winnings) and registered_at (not answered to the key owner).
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.agents.wallets (
  agent_id STRING NOT NULL COMMENT 'Purple Flea agent identifier (NOT NULL, PK)',
  wallet_address STRING COMMENT 'On-chain wallet address',
  balance_usd DOUBLE COMMENT 'Current USD-equivalent balance (refreshed hourly)',
  active_escrow_count INT COMMENT 'Number of open escrow contracts',
  total_earned_usd DOUBLE COMMENT 'Lifetime earnings through Purple Flea',
  referral_code STRING COMMENT 'Agent referral code for 15% fee sharing',
  registered_at TIMESTAMP COMMENT 'Agent registration timestamp',
  last_synced_at TIMESTAMP COMMENT 'Last balance sync from Purple Flea API'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/agents/wallets'
COMMENT 'Purple Flea agent wallets synced from purpleflea.com/api'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true'
);
