//! The matching rules, as DataFusion SQL over the synced ledger and the payout log. Every operation lands
//! in exactly one class (the `CASE` below); every provider transaction carrying one of our keys either
//! belongs to an operation or is `unlogged_at_provider`.

/// Operations (from the status view) joined to provider transactions by idempotency key first, then by the
/// log's tx_id, and classified. `{stale_before}` is an RFC 3339 instant.
pub const CLASSIFIED_OPERATIONS: &str = "
WITH ops AS (SELECT * FROM purpleflea.payouts.status),
tx AS (SELECT tx_id, kind, agent_id, amount_usd, idempotency_key, created_date FROM purpleflea.ledger.transactions),
by_key AS (
  SELECT o.operation_id, count(*) AS n, string_agg(t.tx_id, ',') AS tx_ids,
         min(t.agent_id) AS t_agent, min(t.amount_usd) AS t_amount, min(t.created_date) AS t_day
  FROM ops o JOIN tx t ON t.idempotency_key = o.idempotency_key
  GROUP BY o.operation_id
),
by_tx AS (
  SELECT o.operation_id, t.tx_id, t.agent_id AS t_agent, t.amount_usd AS t_amount, t.created_date AS t_day
  FROM ops o JOIN tx t ON t.tx_id = o.tx_id
),
joined AS (
  SELECT o.operation_id, o.kind, o.status, o.idempotency_key, o.agent_id AS exp_agent, o.amount_usd AS exp_amount,
         o.tx_id AS log_tx_id, o.last_recorded_at,
         CASE WHEN k.n IS NOT NULL THEN k.n WHEN b.tx_id IS NOT NULL THEN 1 ELSE 0 END AS n,
         coalesce(k.tx_ids, b.tx_id) AS tx_ids,
         coalesce(k.t_agent, b.t_agent) AS t_agent,
         coalesce(k.t_amount, b.t_amount) AS t_amount,
         coalesce(k.t_day, b.t_day) AS t_day
  FROM ops o
  LEFT JOIN by_key k ON k.operation_id = o.operation_id
  LEFT JOIN by_tx b ON b.operation_id = o.operation_id
)
SELECT *,
  CASE
    WHEN status = 'completed' AND n = 0 THEN 'missing_at_provider'
    WHEN n > 1 THEN 'duplicate_at_provider'
    WHEN status = 'rejected' AND n >= 1 THEN 'status_mismatch'
    WHEN status = 'rejected' THEN 'matched'
    WHEN status IN ('unknown', 'in_flight') AND last_recorded_at < TIMESTAMP '{stale_before}' THEN 'stale_unknown'
    -- Young and not final, even when the provider already shows the money moved: a payouts run is between
    -- the API's answer and its log commit, or died there; the next run records it by lookup. Flagging it
    -- would raise a finding that a concurrent run clears seconds later.
    WHEN status IN ('unknown', 'in_flight') THEN 'in_progress'
    WHEN exp_amount IS NOT NULL AND t_amount <> exp_amount THEN 'amount_mismatch'
    WHEN exp_agent IS NOT NULL AND t_agent <> exp_agent THEN 'agent_mismatch'
    ELSE 'matched'
  END AS class
FROM joined
";

/// Provider transactions with a key of our namespace that no logged operation carries.
pub const UNLOGGED_AT_PROVIDER: &str = "
SELECT t.tx_id, t.kind, t.agent_id, t.amount_usd, t.idempotency_key
FROM purpleflea.ledger.transactions t
LEFT JOIN (SELECT DISTINCT idempotency_key FROM purpleflea.payouts.log) l ON l.idempotency_key = t.idempotency_key
WHERE starts_with(t.idempotency_key, '{prefix}') AND l.idempotency_key IS NULL
";

/// Keyless provider payouts equal (agent, amount, reason) to a completed logged payout: paid by hand or by
/// another path, most likely a second payment.
pub const UNATTRIBUTED_PAYOUTS: &str = "
SELECT t.tx_id, t.agent_id, t.amount_usd, t.reference, s.operation_id
FROM purpleflea.ledger.transactions t
JOIN purpleflea.payouts.status s
  ON s.kind = 'payout' AND s.status = 'completed'
 AND s.agent_id = t.agent_id AND s.amount_usd = t.amount_usd AND s.reason = t.reference
WHERE t.kind = 'payout' AND t.idempotency_key IS NULL
";

/// Wallet balances that differ from what the synced transactions imply (in cents, so the DOUBLE column is
/// compared without float arithmetic on the ledger side).
pub const BALANCE_MISMATCHES: &str = "
WITH implied AS (
  SELECT agent_id, sum(CASE WHEN kind = 'escrow_lock' THEN -amount_usd ELSE amount_usd END) AS implied
  FROM purpleflea.ledger.transactions GROUP BY agent_id
)
SELECT w.agent_id,
       CAST(round(w.balance_usd * 100) AS BIGINT) AS actual_cents,
       CAST(coalesce(i.implied, 0) * 100 AS BIGINT) AS expected_cents
FROM purpleflea.agents.wallets w LEFT JOIN implied i ON i.agent_id = w.agent_id
WHERE CAST(round(w.balance_usd * 100) AS BIGINT) <> CAST(coalesce(i.implied, 0) * 100 AS BIGINT)
";

/// Provider money per day and kind.
pub const DAILY_TOTALS: &str = "
SELECT created_date AS day, kind, count(*) AS transactions, sum(amount_usd) AS amount_usd
FROM purpleflea.ledger.transactions GROUP BY created_date, kind
";

/// Matched money per day and provider kind, from the classified operations.
pub const DAILY_MATCHED: &str = "
SELECT t_day AS day,
       CASE kind WHEN 'payout' THEN 'payout' WHEN 'escrow_create' THEN 'escrow_lock'
                 WHEN 'escrow_release' THEN 'escrow_release' ELSE 'escrow_refund' END AS tx_kind,
       sum(t_amount) AS matched
FROM classified WHERE class = 'matched' AND status = 'completed' AND t_day IS NOT NULL
GROUP BY 1, 2
";
