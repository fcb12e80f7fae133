-- purpleflea.payouts.classification: what reconcile carries from one run to the next, so that a run reads
-- only what changed: every logged operation with the provider transactions that match it and its class, and
-- every provider transaction no operation's key claims. Settled rows (matched, final operations) are read
-- again only when new log events or transactions concern them; the others are read by every run. The log
-- and ledger versions the table covers are Delta application transactions in its log
-- (pfsync.reconcile.log, pfsync.reconcile.transactions). `pfsync reconcile --full` rebuilds it.
-- Mirrors CLASSIFICATION in src/tables/spec.rs; tests/it/sql_files.rs checks the two match.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.payouts.classification (
  operation_id STRING COMMENT 'payout_id or action_id; null on the row of a provider transaction no operation claims',
  kind STRING NOT NULL COMMENT 'Operation kind; on a transaction row, the provider transaction kind',
  status STRING COMMENT 'completed | rejected | unknown | in_flight, as purpleflea.payouts.status gives it',
  attempts INT COMMENT 'Highest attempt logged',
  agent_id STRING COMMENT 'Agent the log recorded',
  amount_usd DECIMAL(18,2) COMMENT 'Amount the log recorded, exact cents',
  reason STRING COMMENT 'Reason the log recorded',
  idempotency_key STRING COMMENT 'Key of the operation; on a transaction row, the key it carried (null when none)',
  log_tx_id STRING COMMENT 'Provider transaction a completed event recorded',
  first_recorded_at TIMESTAMP COMMENT 'First event of the operation',
  last_recorded_at TIMESTAMP COMMENT 'Latest event of the operation',
  matched_by STRING COMMENT 'key | tx_id: how the provider transactions were found (null: none were)',
  transactions BIGINT NOT NULL COMMENT 'Provider transactions found for the operation (by key, else the one the log recorded); 1 on a transaction row',
  tx_ids STRING COMMENT 'Those transactions, comma-separated in tx_id order',
  provider_agent_id STRING COMMENT 'Agent the provider shows (the least, when several)',
  provider_amount_usd DECIMAL(18,2) COMMENT 'Amount the provider shows (the least, when several)',
  provider_date DATE COMMENT 'Day (UTC) of the earliest of those transactions',
  provider_reference STRING COMMENT 'Transaction row: the reference the provider shows',
  repeats_operation_id STRING COMMENT 'Transaction row of a payout with no key: a completed logged payout of the same agent, amount and reason (one row per such payout)',
  class STRING COMMENT 'matched | in_progress | a finding class; null on a transaction row that is no finding (another namespace, a keyless payout that repeats none)',
  log_version BIGINT NOT NULL COMMENT 'Payout log version of the run that last changed the row',
  transactions_version BIGINT NOT NULL COMMENT 'Transactions table version of that run (-1: there was no table)',
  settled BOOLEAN NOT NULL COMMENT 'true: a final operation that matched, read again only when new events or transactions concern it; false: read by every run; the partition column'
)
USING DELTA
PARTITIONED BY (settled)
LOCATION '<warehouse>/purpleflea/payouts/classification'
COMMENT 'Reconcile state: every logged operation with the provider transactions that match it and its class, and every provider transaction no operation claims; the log and ledger versions it covers are in its transaction log';
