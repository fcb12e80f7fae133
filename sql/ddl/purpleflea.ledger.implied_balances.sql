-- purpleflea.ledger.implied_balances: per agent, the balance the synced provider transactions imply (escrow
-- locks take money out); kept by reconcile from the transactions appended since its last run, compared with
-- each wallet (balance_mismatch).
-- Mirrors IMPLIED_BALANCES in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ledger.implied_balances (
  agent_id STRING NOT NULL COMMENT 'Purple Flea agent identifier (NOT NULL, PK)',
  implied_usd DECIMAL(18,2) NOT NULL COMMENT 'Sum of its transactions, escrow locks negative, exact cents',
  transactions BIGINT NOT NULL COMMENT 'Transactions summed',
  computed_run_id STRING NOT NULL COMMENT 'Reconcile run that wrote the row'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/ledger/implied_balances'
COMMENT 'Per agent, the balance the synced provider transactions imply (credits less escrow locks); kept by reconcile from the transactions appended since its last run';
