-- provider_transactions: how many provider transactions the ledger copy holds, as one row.
-- DataFusion SQL, run by `pfsync reconcile`.
SELECT count(*) AS transactions
FROM purpleflea.ledger.transactions
