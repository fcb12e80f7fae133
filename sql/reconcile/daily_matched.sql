-- daily_matched: matched money per day and provider kind (an operation kind mapped to the kind of the
-- provider transaction it makes).
-- DataFusion SQL over the `classified` table that `pfsync reconcile` registers from classified.sql.
SELECT t_day AS day,
       CASE kind WHEN 'payout' THEN 'payout' WHEN 'escrow_create' THEN 'escrow_lock'
                 WHEN 'escrow_release' THEN 'escrow_release' ELSE 'escrow_refund' END AS tx_kind,
       sum(t_amount) AS matched
FROM classified
WHERE class = 'matched' AND status = 'completed' AND t_day IS NOT NULL
GROUP BY 1, 2
