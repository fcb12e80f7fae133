//! The rows the queries of `sql/reconcile/` return, one struct per query, decoded by column name with
//! their types (`decode.rs`), and the findings they make. A value the SQL guarantees (a class's amounts,
//! an operation's id) is required here too: if it is missing, the row is an error naming it, not a blank.

use arrow::array::RecordBatch;
use chrono::NaiveDate;

use super::decode::{CellError, Cells, decode, decode_one, decode_rows};
use super::findings::ReconciliationRow;
use super::matching::{
    BALANCE_MISMATCHES, CLASS_COUNTS, DAILY_TOTALS, IMPLIED_BALANCES, MATCHED_TOTAL, OPERATION_FINDINGS, PREVIOUS_OPEN,
    PROVIDER_TRANSACTIONS, UNATTRIBUTED_PAYOUTS, UNLOGGED_AT_PROVIDER,
};
use super::{Class, Finding, FindingRow, ReconcileError};
use crate::money::Usd;
use crate::operation::OpKind;
use crate::payouts::state::StatusName;
use crate::provider::records::TxKind;
use crate::tables::row::Text;

/// `class_counts.sql`: operations per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCount {
    pub class: Class,
    pub operations: u64,
}

pub fn class_counts(batches: &[RecordBatch]) -> Result<Vec<ClassCount>, ReconcileError> {
    decode(&CLASS_COUNTS, batches, &["class"], |r| {
        Ok(ClassCount { class: r.class("class")?, operations: r.count("operations")? })
    })
}

/// `matched_total.sql`: provider money of the matched, completed operations.
pub fn matched_total(batches: &[RecordBatch]) -> Result<Usd, ReconcileError> {
    decode_one(&MATCHED_TOTAL, batches, |r| r.usd("amount_usd"))
}

/// `provider_transactions.sql`: how many transactions the ledger copy holds.
pub fn provider_transactions(batches: &[RecordBatch]) -> Result<u64, ReconcileError> {
    decode_one(&PROVIDER_TRANSACTIONS, batches, |r| r.count("transactions"))
}

/// `operation_findings.sql`: a classified operation that is a finding, with what the log (`exp_*`, `log_tx_id`)
/// and the provider (`t_*`, `tx_ids`, `n`) say (the classification's `agent_id`, `amount_usd`, `provider_*`
/// and `transactions`).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationFindingRow {
    pub class: Class,
    pub operation_id: String,
    pub kind: OpKind,
    pub status: StatusName,
    pub idempotency_key: String,
    /// Provider transactions found for the operation, comma-separated; none for `missing_at_provider`.
    pub tx_ids: Option<String>,
    /// The log's agent and amount: an escrow action may carry neither.
    pub exp_agent: Option<String>,
    pub exp_amount: Option<Usd>,
    /// The provider's, when it has a transaction for the operation.
    pub t_agent: Option<String>,
    pub t_amount: Option<Usd>,
    /// How many provider transactions carry the operation's key (or its logged tx_id).
    pub n: u64,
    /// The transaction the log recorded as completed, if any.
    pub log_tx_id: Option<String>,
}

impl OperationFindingRow {
    fn read(r: &Cells<'_>) -> Result<OperationFindingRow, CellError> {
        Ok(OperationFindingRow {
            class: r.class("class")?,
            operation_id: r.text("operation_id")?,
            kind: r.parsed("kind")?,
            status: r.parsed("status")?,
            idempotency_key: r.text("idempotency_key")?,
            tx_ids: r.opt_text("tx_ids")?,
            exp_agent: r.opt_text("agent_id")?,
            exp_amount: r.opt_usd("amount_usd")?,
            t_agent: r.opt_text("provider_agent_id")?,
            t_amount: r.opt_usd("provider_amount_usd")?,
            n: r.count("transactions")?,
            log_tx_id: r.opt_text("log_tx_id")?,
        })
    }

    /// The finding, worded for its class. The classes that compare values require both sides: the
    /// `CASE` in `classified.sql` only yields them when both are there.
    pub fn finding(self) -> Result<Finding, CellError> {
        let detail = match self.class {
            Class::MissingAtProvider => format!(
                "the log says completed (tx {}) but the provider has no transaction for it",
                // A completed event may legitimately carry no tx_id; the text shows that as "-".
                self.log_tx_id.as_deref().unwrap_or("-")
            ),
            Class::DuplicateAtProvider => format!("{} provider transactions carry this operation's key", self.n),
            Class::StatusMismatch => {
                format!("the log says {} but the provider shows money moved", self.status.as_str())
            }
            Class::StaleUnknown => {
                format!("{} with no final outcome for longer than the stale threshold", self.status.as_str())
            }
            Class::AmountMismatch => {
                let (e, a) = both(&self.exp_amount, "amount_usd", &self.t_amount, "provider_amount_usd")?;
                format!("the log says {e} USD, the provider {a} USD")
            }
            Class::AgentMismatch => {
                let (e, a) = both(&self.exp_agent, "agent_id", &self.t_agent, "provider_agent_id")?;
                format!("the log says agent {e}, the provider {a}")
            }
            other => {
                return Err(CellError::Value {
                    column: "class",
                    value: other.as_str().to_string(),
                    expected: "a class classified.sql gives a finding",
                });
            }
        };
        Ok(Finding {
            agent_id: self.exp_agent.clone().or_else(|| self.t_agent.clone()),
            operation_id: Some(self.operation_id),
            kind: Some(self.kind.as_str().to_string()),
            idempotency_key: Some(self.idempotency_key),
            tx_ids: self.tx_ids,
            expected_agent: self.exp_agent,
            actual_agent: self.t_agent,
            expected_amount: self.exp_amount,
            actual_amount: self.t_amount,
            ..Finding::new(self.class, detail)
        })
    }
}

/// Both sides of a comparison, or the side that is missing.
fn both<T: Clone>(
    expected: &Option<T>,
    expected_column: &'static str,
    actual: &Option<T>,
    actual_column: &'static str,
) -> Result<(T, T), CellError> {
    match (expected, actual) {
        (Some(e), Some(a)) => Ok((e.clone(), a.clone())),
        (None, _) => Err(CellError::Null { column: expected_column }),
        (_, None) => Err(CellError::Null { column: actual_column }),
    }
}

pub fn operation_findings(batches: &[RecordBatch]) -> Result<Vec<Finding>, ReconcileError> {
    decode(&OPERATION_FINDINGS, batches, &["operation_id", "class"], |r| OperationFindingRow::read(r)?.finding())
}

/// `unlogged_at_provider.sql`: a provider transaction with one of our keys that no logged operation carries.
#[derive(Debug, Clone, PartialEq)]
pub struct UnloggedRow {
    pub tx_id: String,
    pub kind: String,
    pub agent_id: String,
    pub amount: Usd,
    pub idempotency_key: String,
}

impl UnloggedRow {
    pub fn finding(self) -> Finding {
        let detail = "a provider transaction carries one of our keys, but no logged operation does";
        Finding {
            kind: Some(self.kind),
            idempotency_key: Some(self.idempotency_key),
            tx_ids: Some(self.tx_id),
            agent_id: Some(self.agent_id.clone()),
            actual_agent: Some(self.agent_id),
            actual_amount: Some(self.amount),
            ..Finding::new(Class::UnloggedAtProvider, detail.into())
        }
    }
}

pub fn unlogged_at_provider(batches: &[RecordBatch]) -> Result<Vec<Finding>, ReconcileError> {
    decode(&UNLOGGED_AT_PROVIDER, batches, &["tx_id"], |r| {
        Ok(UnloggedRow {
            tx_id: r.text("tx_id")?,
            kind: r.text("kind")?,
            agent_id: r.text("agent_id")?,
            amount: r.usd("amount_usd")?,
            idempotency_key: r.text("idempotency_key")?,
        }
        .finding())
    })
}

/// `unattributed_payouts.sql`: a keyless provider payout equal to a completed logged payout.
#[derive(Debug, Clone, PartialEq)]
pub struct UnattributedRow {
    pub tx_id: String,
    pub agent_id: String,
    pub amount: Usd,
    /// The payout's reason, equal to the logged payout's.
    pub reference: String,
    /// The logged payout it repeats.
    pub operation_id: String,
}

impl UnattributedRow {
    pub fn finding(self) -> Finding {
        let detail = format!(
            "a payout with no idempotency key equals logged payout {} (same agent, amount and reason {:?}): likely paid twice",
            self.operation_id, self.reference
        );
        Finding {
            operation_id: Some(self.operation_id),
            kind: Some("payout".into()),
            tx_ids: Some(self.tx_id),
            agent_id: Some(self.agent_id.clone()),
            actual_agent: Some(self.agent_id),
            actual_amount: Some(self.amount),
            ..Finding::new(Class::UnattributedPayout, detail)
        }
    }
}

pub fn unattributed_payouts(batches: &[RecordBatch]) -> Result<Vec<Finding>, ReconcileError> {
    decode(&UNATTRIBUTED_PAYOUTS, batches, &["tx_id", "operation_id"], |r| {
        Ok(UnattributedRow {
            tx_id: r.text("tx_id")?,
            agent_id: r.text("agent_id")?,
            amount: r.usd("amount_usd")?,
            reference: r.text("reference")?,
            operation_id: r.text("operation_id")?,
        }
        .finding())
    })
}

/// `balance_mismatches.sql`: a wallet whose balance the synced transactions do not explain.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceMismatchRow {
    pub agent_id: String,
    /// The wallet's balance.
    pub actual: Usd,
    /// What the transactions imply.
    pub expected: Usd,
}

impl BalanceMismatchRow {
    pub fn finding(self) -> Finding {
        let detail = format!("wallet balance {} USD, the synced transactions imply {} USD", self.actual, self.expected);
        Finding {
            agent_id: Some(self.agent_id),
            expected_amount: Some(self.expected),
            actual_amount: Some(self.actual),
            ..Finding::new(Class::BalanceMismatch, detail)
        }
    }
}

pub fn balance_mismatches(batches: &[RecordBatch]) -> Result<Vec<Finding>, ReconcileError> {
    decode(&BALANCE_MISMATCHES, batches, &["agent_id"], |r| {
        Ok(BalanceMismatchRow {
            agent_id: r.text("agent_id")?,
            actual: r.cents("actual_cents")?,
            expected: r.cents("expected_cents")?,
        }
        .finding())
    })
}

/// `daily_totals.sql`: provider money of one day and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyTotalRow {
    pub day: NaiveDate,
    pub kind: TxKind,
    pub transactions: i64,
    pub amount: Usd,
}

pub fn daily_totals(batches: &[RecordBatch]) -> Result<Vec<DailyTotalRow>, ReconcileError> {
    decode(&DAILY_TOTALS, batches, &["day", "kind"], |r| {
        Ok(DailyTotalRow {
            day: r.date("day")?,
            kind: r.parsed("kind")?,
            transactions: r.int("transactions")?,
            amount: r.usd("amount_usd")?,
        })
    })
}

/// `implied_balances.sql`: what one agent's transactions add up to.
pub fn implied_balances(batches: &[RecordBatch]) -> Result<Vec<(String, Usd, i64)>, ReconcileError> {
    decode(&IMPLIED_BALANCES, batches, &["agent_id"], |r| {
        Ok((r.text("agent_id")?, r.usd("implied_usd")?, r.int("transactions")?))
    })
}

/// `previous_open.sql`: the previous run's open findings, as the rows this run carries forward.
pub fn previous_open(batches: &[RecordBatch]) -> Result<Vec<FindingRow>, ReconcileError> {
    Ok(decode_rows::<ReconciliationRow>(&PREVIOUS_OPEN, batches)?.into_iter().map(FindingRow::from).collect())
}
