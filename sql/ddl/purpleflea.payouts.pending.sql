-- purpleflea.payouts.pending: payouts requested by upstream jobs. pfsync reads it and pays each payout_id
-- exactly once; it never deletes rows (the log says what was paid). Mirrors PENDING_PAYOUTS in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.payouts.pending (
  payout_id STRING NOT NULL COMMENT 'Unique id of the payout; its idempotency key derives from it (NOT NULL, PK)',
  agent_id STRING COMMENT 'Agent to pay',
  amount_usd DECIMAL(18,2) COMMENT 'Amount in USD, exact cents, > 0',
  reason STRING COMMENT 'Why the agent is paid (recorded with the payout)',
  requested_at TIMESTAMP COMMENT 'When the payout was requested',
  requested_by STRING COMMENT 'Who or what requested it'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/payouts/pending'
COMMENT 'Payouts to execute through Purple Flea; pfsync pays each payout_id exactly once';
