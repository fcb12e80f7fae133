-- purpleflea.ops.mcp_calls: every MCP tool call pfsync mcp answered (audit). Mirrors MCP_CALLS in src/tables/spec.rs.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.ops.mcp_calls (
  call_id STRING NOT NULL COMMENT 'Unique id of the call (UUID v7)',
  tool STRING NOT NULL COMMENT 'Tool called, e.g. release_escrow',
  client STRING NOT NULL COMMENT 'Client the server was started for (pfsync mcp --client): the requested_by of its operations',
  client_info STRING COMMENT 'Name and version the MCP client announced (not authenticated)',
  transport STRING NOT NULL COMMENT 'stdio | http',
  request_id STRING COMMENT 'request_id the agent gave (money tools)',
  operation_id STRING COMMENT 'Payout or escrow action id derived from it: joins purpleflea.payouts.log',
  arguments STRING NOT NULL COMMENT 'Arguments as JSON, clipped to 4 KiB; no tool takes a secret',
  decision STRING NOT NULL COMMENT 'read | execute | queue | deny | refused | replayed | invalid | error',
  amount_usd DECIMAL(18,2) COMMENT 'Amount requested (payouts, escrow creates) or credited (faucet claims)',
  is_error BOOLEAN NOT NULL COMMENT 'Whether the agent got a tool error',
  result STRING COMMENT 'What the agent got, as JSON or text, clipped to 4 KiB',
  started_at TIMESTAMP NOT NULL COMMENT 'When the call arrived',
  finished_at TIMESTAMP NOT NULL COMMENT 'When it was answered'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/ops/mcp_calls'
COMMENT 'Every MCP tool call pfsync mcp answered: who asked, what, what the policy decided, what came back'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.deletedFileRetentionDuration' = 'interval 365 days',
  'delta.logRetentionDuration' = 'interval 365 days'
);
