-- purpleflea.payouts.log: append-only, one row per event (intent before money moves, outcome after).
-- Kept a year for time travel. Mirrors PAYOUT_LOG in src/tables/spec.rs; the status view is in sql/views/.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.payouts.log (
  operation_id STRING NOT NULL COMMENT 'payout_id or action_id',
  kind STRING NOT NULL COMMENT 'payout | escrow_create | escrow_release | escrow_dispute',
  event STRING NOT NULL COMMENT 'intent | completed | rejected | unknown | never_ran (an attempt that provably did not run: the next may be sent) | abandoned (a person decided it is not to be paid)',
  attempt INT NOT NULL COMMENT '1 for the first send; grows with each resolution attempt',
  agent_id STRING COMMENT 'Payee (payout, release) or buyer (create, dispute)',
  counterparty_agent_id STRING COMMENT 'Seller of an escrow create',
  amount_usd DECIMAL(18,2) COMMENT 'Amount in USD, exact cents',
  reason STRING COMMENT 'Recorded reason',
  idempotency_key STRING NOT NULL COMMENT 'Idempotency-Key sent with every attempt of this operation',
  tx_id STRING COMMENT 'Provider transaction of a completed operation',
  escrow_id STRING COMMENT 'Escrow created, released or disputed',
  http_status INT COMMENT 'HTTP status of the attempt, when one came back',
  error_code STRING COMMENT 'Contract error code, or one of pfsync: transport, malformed_response, lookup_failed, lookup_inconclusive (the evidence of the provider proved nothing; never resent)',
  error_message STRING COMMENT 'Error text',
  run_id STRING NOT NULL COMMENT 'Run that wrote the event',
  recorded_at TIMESTAMP NOT NULL COMMENT 'When the event was recorded',
  recorded_date DATE NOT NULL COMMENT 'Day (UTC) of recorded_at; the partition column',
  payer_agent_id STRING COMMENT 'The agent the operation debits (the payer of a payout, the buyer of an escrow create), where the provider pays from the balance of an agent',
  decided_by STRING COMMENT 'The person who recorded this event (pfsync resolve --by); null for events pfsync wrote itself',
  note STRING COMMENT 'Why a person decided so (pfsync resolve --note)'
)
USING DELTA
PARTITIONED BY (recorded_date)
LOCATION '<warehouse>/purpleflea/payouts/log'
COMMENT 'Append-only log of every payout and escrow action pfsync executed: intent before money moves, outcome after'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
