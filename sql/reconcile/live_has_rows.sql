-- live_has_rows: whether the live ledger copy and the seed's transaction copy hold rows; reconcile runs the
-- checks whose table has data (the live ones on purpleflea.ledger.entries, the seed's on
-- purpleflea.ledger.transactions, or the seed's when neither has any). DataFusion SQL, not deployed.
SELECT (SELECT count(*) FROM purpleflea.ledger.entries) AS ledger_entries,
       (SELECT count(*) FROM purpleflea.ledger.transactions) AS transactions
