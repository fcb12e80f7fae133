-- Example grants from the Purple Flea for Databricks guide: analysts read the synced wallets.
-- Adjust principals to your workspace; pfsync itself needs MODIFY on the tables it writes.
GRANT SELECT ON TABLE purpleflea.agents.wallets TO `ml-engineers@yourcompany.com`;
