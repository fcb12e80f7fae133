-- purpleflea.escrow.actions: escrow creations, releases and disputes requested upstream (the guide's bounty
-- flow: create, then release or dispute naming the create by create_action_id). Mirrors ESCROW_ACTIONS.
-- The statement below is generated (src/tables/ddl.rs): `pfsync ddl --warehouse URI` prints it with the
-- warehouse's cloud URI in place of <warehouse>, with the schemas, views and grants.
CREATE TABLE IF NOT EXISTS purpleflea.escrow.actions (
  action_id STRING NOT NULL COMMENT 'Unique id of the action (NOT NULL, PK)',
  action STRING COMMENT 'create | release | dispute',
  escrow_id STRING COMMENT 'Escrow to release or dispute',
  create_action_id STRING COMMENT 'Or: the create action whose escrow to release or dispute',
  buyer_agent_id STRING COMMENT 'create: agent whose funds are locked',
  seller_agent_id STRING COMMENT 'create: agent paid on release',
  amount_usd DECIMAL(18,2) COMMENT 'create: amount in USD, exact cents, > 0',
  description STRING COMMENT 'create: description',
  metadata STRING COMMENT 'create: metadata object as JSON text',
  reason STRING COMMENT 'Why (recorded with the action)',
  requested_at TIMESTAMP COMMENT 'When the action was requested',
  requested_by STRING COMMENT 'Who or what requested it'
)
USING DELTA
LOCATION '<warehouse>/purpleflea/escrow/actions'
COMMENT 'Escrow actions to execute through Purple Flea; pfsync runs each action_id exactly once';
