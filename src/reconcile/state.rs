//! What reconcile carries from one run to the next, so that a run reads only what changed: the rows of
//! `purpleflea.payouts.classification` (one per logged operation, one per provider transaction no operation's
//! key claims) and of `purpleflea.ledger.implied_balances`, and the typed values the rules work on. A row is
//! decoded into a [`Subject`] (an operation or an unclaimed transaction) with what it must hold checked, and
//! encoded back with the versions of the run that changed it.

use chrono::{DateTime, NaiveDate, Utc};

use super::findings::Class;
use crate::money::Usd;
use crate::operation::OpKind;
use crate::payouts::state::StatusName;
use crate::provider::records::TxKind;
use crate::tables::row::{CellError, Text, table_row};
use crate::tables::{CLASSIFICATION, IMPLIED_BALANCES};

/// How an operation's provider transactions were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchedBy {
    /// Every transaction carrying the operation's idempotency key.
    Key,
    /// No transaction carries the key: the one whose id a completed event recorded.
    TxId,
}

impl Text for MatchedBy {
    const WHAT: &'static str = "how transactions were matched (key, tx_id)";
    fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Key => "key",
            MatchedBy::TxId => "tx_id",
        }
    }
    fn parse(s: &str) -> Option<MatchedBy> {
        [MatchedBy::Key, MatchedBy::TxId].into_iter().find(|m| m.as_str() == s)
    }
}

table_row! {
    /// One row of `purpleflea.payouts.classification`: an operation, or a provider transaction no operation's
    /// key claims (`operation_id` NULL).
    pub struct ClassificationRow: CLASSIFICATION, key(operation_id, tx_ids) {
        pub operation_id: Option<String>,
        pub kind: String,
        pub status: Option<StatusName>,
        pub attempts: Option<i32>,
        pub agent_id: Option<String>,
        pub amount_usd: Option<Usd>,
        pub reason: Option<String>,
        pub idempotency_key: Option<String>,
        pub log_tx_id: Option<String>,
        pub first_recorded_at: Option<DateTime<Utc>>,
        pub last_recorded_at: Option<DateTime<Utc>>,
        pub matched_by: Option<MatchedBy>,
        pub transactions: i64,
        pub tx_ids: Option<String>,
        pub provider_agent_id: Option<String>,
        pub provider_amount_usd: Option<Usd>,
        pub provider_date: Option<NaiveDate>,
        pub provider_reference: Option<String>,
        pub repeats_operation_id: Option<String>,
        pub class: Option<Class>,
        pub log_version: i64,
        pub transactions_version: i64,
        pub settled: bool,
    }
}

table_row! {
    /// One row of `purpleflea.ledger.implied_balances`.
    pub struct ImpliedBalance: IMPLIED_BALANCES, key(agent_id) {
        pub agent_id: String,
        pub implied_usd: Usd,
        pub transactions: i64,
        pub computed_run_id: String,
    }
}

/// The versions of the payout log and the transactions table a run read up to (-1: no transactions table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub log: i64,
    pub transactions: i64,
}

/// A provider transaction, as far as matching needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    pub tx_id: String,
    pub kind: TxKind,
    pub agent_id: String,
    pub amount: Usd,
    pub key: Option<String>,
    pub reference: Option<String>,
    pub date: NaiveDate,
}

impl From<&crate::sync::rows::TransactionRow> for Tx {
    fn from(t: &crate::sync::rows::TransactionRow) -> Tx {
        Tx {
            tx_id: t.tx_id.clone(),
            kind: t.kind,
            agent_id: t.agent_id.clone(),
            amount: t.amount_usd,
            key: t.idempotency_key.clone(),
            reference: t.reference.clone(),
            date: t.created_date,
        }
    }
}

/// Every transaction carrying one idempotency key, as the SQL aggregates them: how many, their ids in
/// order, and the least agent, amount and day among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    pub n: i64,
    /// Sorted (byte order, as `array_sort` sorts text).
    pub tx_ids: Vec<String>,
    pub agent_id: String,
    pub amount: Usd,
    pub date: NaiveDate,
}

impl KeyMatch {
    pub fn of(tx: &Tx) -> KeyMatch {
        KeyMatch {
            n: 1,
            tx_ids: vec![tx.tx_id.clone()],
            agent_id: tx.agent_id.clone(),
            amount: tx.amount,
            date: tx.date,
        }
    }

    /// Both sets of transactions as one.
    pub fn add(&mut self, other: &KeyMatch) {
        self.n += other.n;
        self.tx_ids.extend(other.tx_ids.iter().cloned());
        self.tx_ids.sort();
        if other.agent_id < self.agent_id {
            self.agent_id = other.agent_id.clone();
        }
        self.amount = self.amount.min(other.amount);
        self.date = self.date.min(other.date);
    }
}

/// The provider transactions found for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    None,
    ByKey(KeyMatch),
    /// The transaction a completed event recorded (no transaction carries the key).
    ByTxId {
        tx_id: String,
        agent_id: String,
        amount: Usd,
        date: NaiveDate,
    },
}

impl Found {
    /// How many transactions: the key's, else one recorded by id, else none.
    pub fn n(&self) -> i64 {
        match self {
            Found::None => 0,
            Found::ByKey(k) => k.n,
            Found::ByTxId { .. } => 1,
        }
    }

    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Found::None => None,
            Found::ByKey(k) => Some(&k.agent_id),
            Found::ByTxId { agent_id, .. } => Some(agent_id),
        }
    }

    pub fn amount(&self) -> Option<Usd> {
        match self {
            Found::None => None,
            Found::ByKey(k) => Some(k.amount),
            Found::ByTxId { amount, .. } => Some(*amount),
        }
    }

    pub fn date(&self) -> Option<NaiveDate> {
        match self {
            Found::None => None,
            Found::ByKey(k) => Some(k.date),
            Found::ByTxId { date, .. } => Some(*date),
        }
    }
}

/// A logged operation: its events folded as the `purpleflea.payouts.status` view folds them, and what the
/// provider shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub operation_id: String,
    pub kind: OpKind,
    pub status: StatusName,
    pub attempts: i32,
    pub agent_id: Option<String>,
    pub amount: Option<Usd>,
    pub reason: Option<String>,
    pub key: String,
    /// The greatest tx_id a completed event recorded.
    pub log_tx_id: Option<String>,
    pub first_recorded_at: DateTime<Utc>,
    pub last_recorded_at: DateTime<Utc>,
    pub found: Found,
    pub class: Class,
}

/// A provider transaction no logged operation claims by its key: one with a key nobody logged, or a payout
/// with no key (one subject per completed logged payout it repeats, or one when it repeats none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclaimed {
    pub tx: Tx,
    pub repeats: Option<String>,
    pub class: Option<Class>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Operation(Operation),
    Unclaimed(Unclaimed),
}

/// The daily totals kind an operation's matched money counts under.
pub fn tx_kind_of(kind: OpKind) -> TxKind {
    match kind {
        OpKind::Payout => TxKind::Payout,
        OpKind::EscrowCreate => TxKind::EscrowLock,
        OpKind::EscrowRelease => TxKind::EscrowRelease,
        OpKind::EscrowDispute => TxKind::EscrowRefund,
    }
}

impl Operation {
    /// What this operation adds to the daily totals' matched money: a completed operation that matched counts
    /// its provider amount on its provider day, under the kind of transaction its kind makes.
    pub fn matched(&self) -> Option<(NaiveDate, TxKind, Usd)> {
        if self.class != Class::Matched || self.status != StatusName::Completed {
            return None;
        }
        Some((self.found.date()?, tx_kind_of(self.kind), self.found.amount()?))
    }
}

fn required<T>(v: Option<T>, column: &'static str) -> Result<T, CellError> {
    v.ok_or(CellError::Null { column })
}

fn parsed<T: Text>(text: &str, column: &'static str) -> Result<T, CellError> {
    T::parse(text).ok_or_else(|| CellError::Value { column, value: text.to_string(), expected: T::WHAT })
}

impl Subject {
    /// Matched, final operations are settled: no run reads them again unless new data concerns them.
    pub fn settled(&self) -> bool {
        matches!(self, Subject::Operation(op) if op.class == Class::Matched)
    }

    /// What it adds to the daily totals' matched money.
    pub fn matched(&self) -> Option<(NaiveDate, TxKind, Usd)> {
        match self {
            Subject::Operation(op) => op.matched(),
            Subject::Unclaimed(_) => None,
        }
    }

    /// A stored row, with what its kind of subject must hold checked.
    pub fn from_row(r: &ClassificationRow) -> Result<Subject, CellError> {
        let Some(operation_id) = r.operation_id.clone() else {
            let tx = Tx {
                tx_id: required(r.tx_ids.clone(), "tx_ids")?,
                kind: parsed(&r.kind, "kind")?,
                agent_id: required(r.provider_agent_id.clone(), "provider_agent_id")?,
                amount: required(r.provider_amount_usd, "provider_amount_usd")?,
                key: r.idempotency_key.clone(),
                reference: r.provider_reference.clone(),
                date: required(r.provider_date, "provider_date")?,
            };
            return Ok(Subject::Unclaimed(Unclaimed { tx, repeats: r.repeats_operation_id.clone(), class: r.class }));
        };
        let found = match r.matched_by {
            None => Found::None,
            Some(MatchedBy::Key) => Found::ByKey(KeyMatch {
                n: r.transactions,
                tx_ids: required(r.tx_ids.as_deref(), "tx_ids")?.split(',').map(str::to_string).collect(),
                agent_id: required(r.provider_agent_id.clone(), "provider_agent_id")?,
                amount: required(r.provider_amount_usd, "provider_amount_usd")?,
                date: required(r.provider_date, "provider_date")?,
            }),
            Some(MatchedBy::TxId) => Found::ByTxId {
                tx_id: required(r.tx_ids.clone(), "tx_ids")?,
                agent_id: required(r.provider_agent_id.clone(), "provider_agent_id")?,
                amount: required(r.provider_amount_usd, "provider_amount_usd")?,
                date: required(r.provider_date, "provider_date")?,
            },
        };
        Ok(Subject::Operation(Operation {
            operation_id,
            kind: parsed(&r.kind, "kind")?,
            status: required(r.status, "status")?,
            attempts: required(r.attempts, "attempts")?,
            agent_id: r.agent_id.clone(),
            amount: r.amount_usd,
            reason: r.reason.clone(),
            key: required(r.idempotency_key.clone(), "idempotency_key")?,
            log_tx_id: r.log_tx_id.clone(),
            first_recorded_at: required(r.first_recorded_at, "first_recorded_at")?,
            last_recorded_at: required(r.last_recorded_at, "last_recorded_at")?,
            found,
            class: required(r.class, "class")?,
        }))
    }

    /// Its row, stamped with the versions of the run that wrote it.
    pub fn to_row(&self, v: Versions) -> ClassificationRow {
        let settled = self.settled();
        match self {
            Subject::Unclaimed(u) => ClassificationRow {
                operation_id: None,
                kind: u.tx.kind.as_str().to_string(),
                status: None,
                attempts: None,
                agent_id: None,
                amount_usd: None,
                reason: None,
                idempotency_key: u.tx.key.clone(),
                log_tx_id: None,
                first_recorded_at: None,
                last_recorded_at: None,
                matched_by: None,
                transactions: 1,
                tx_ids: Some(u.tx.tx_id.clone()),
                provider_agent_id: Some(u.tx.agent_id.clone()),
                provider_amount_usd: Some(u.tx.amount),
                provider_date: Some(u.tx.date),
                provider_reference: u.tx.reference.clone(),
                repeats_operation_id: u.repeats.clone(),
                class: u.class,
                log_version: v.log,
                transactions_version: v.transactions,
                settled,
            },
            Subject::Operation(op) => {
                let (matched_by, tx_ids) = match &op.found {
                    Found::None => (None, None),
                    Found::ByKey(k) => (Some(MatchedBy::Key), Some(k.tx_ids.join(","))),
                    Found::ByTxId { tx_id, .. } => (Some(MatchedBy::TxId), Some(tx_id.clone())),
                };
                ClassificationRow {
                    operation_id: Some(op.operation_id.clone()),
                    kind: op.kind.as_str().to_string(),
                    status: Some(op.status),
                    attempts: Some(op.attempts),
                    agent_id: op.agent_id.clone(),
                    amount_usd: op.amount,
                    reason: op.reason.clone(),
                    idempotency_key: Some(op.key.clone()),
                    log_tx_id: op.log_tx_id.clone(),
                    first_recorded_at: Some(op.first_recorded_at),
                    last_recorded_at: Some(op.last_recorded_at),
                    matched_by,
                    transactions: op.found.n(),
                    tx_ids,
                    provider_agent_id: op.found.agent_id().map(str::to_string),
                    provider_amount_usd: op.found.amount(),
                    provider_date: op.found.date(),
                    provider_reference: None,
                    repeats_operation_id: None,
                    class: Some(op.class),
                    log_version: v.log,
                    transactions_version: v.transactions,
                    settled,
                }
            }
        }
    }
}

impl ClassificationRow {
    /// The same row but for the versions that stamp it: whether a run changed what the row says.
    pub fn same_as(&self, other: &ClassificationRow) -> bool {
        let unstamped =
            |r: &ClassificationRow| ClassificationRow { log_version: 0, transactions_version: 0, ..r.clone() };
        unstamped(self) == unstamped(other)
    }
}
