//! What the engine needs to know about each synced entity: its table, key, change time, how it becomes
//! Arrow rows, and which fields the contract defines.

use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, Date32Array, Decimal128Array, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

use crate::check;
use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::provider::records::{Escrow, ListQuery, Transaction, Wallet};
use crate::provider::{Listings, PageStream};
use crate::tables::{ESCROWS, TRANSACTIONS, TableSpec, WALLETS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Current state, one row per key: MERGE of changed rows.
    Upsert,
    /// Immutable rows: append what the table does not hold yet.
    AppendOnly,
}

pub trait Synced: Clone + Send + Sync + 'static {
    const SPEC: &'static TableSpec;
    /// The entity's name in messages (`wallet`, `escrow`, `transaction`).
    const ENTITY: &'static str;
    /// The pages of this entity's listing.
    fn pages(listings: &dyn Listings, query: ListQuery) -> PageStream<'_, Self>;
    const MODE: WriteMode;
    /// Columns that record when pfsync wrote the row, not what the API said: left out of "did it change".
    const BOOKKEEPING: &'static [&'static str];
    fn key(&self) -> &str;
    /// The page-order time: `updated_at`, or `created_at` for transactions.
    fn changed_at(&self) -> DateTime<Utc>;
    /// Whether the row may be written: ids, text lengths, control characters (see `check.rs`).
    fn check(&self) -> Result<(), String>;
    fn to_batch(rows: &[&Self], synced_at: DateTime<Utc>) -> Result<RecordBatch, ArrowError>;
}

fn strings<'a, T>(rows: &[&'a T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<StringArray>())
}

fn times<T>(rows: &[&T], f: impl Fn(&T) -> Option<DateTime<Utc>>) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(|r| f(r).map(|t| t.timestamp_micros()))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn money<T>(rows: &[&T], f: impl Fn(&T) -> Usd) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(
        rows.iter()
            .map(|r| Some(f(r).to_decimal128()))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)?,
    ))
}

/// The seed's DOUBLE columns: the nearest double to exact cents (a conversion for display, no arithmetic).
fn display_doubles<T>(rows: &[&T], f: impl Fn(&T) -> Usd) -> ArrayRef {
    Arc::new(rows.iter().map(|r| Some(f(r).to_f64_lossy_for_display_column())).collect::<Float64Array>())
}

impl Synced for Wallet {
    const SPEC: &'static TableSpec = &WALLETS;
    const ENTITY: &'static str = "wallet";
    const MODE: WriteMode = WriteMode::Upsert;
    const BOOKKEEPING: &'static [&'static str] = &["last_synced_at"];

    fn pages(listings: &dyn Listings, query: ListQuery) -> PageStream<'_, Self> {
        listings.wallets(query)
    }

    fn key(&self) -> &str {
        &self.agent_id
    }
    fn changed_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn check(&self) -> Result<(), String> {
        check::id("agent_id", &self.agent_id)?;
        check::short_text("wallet_address", self.wallet_address.as_deref())?;
        check::short_text("referral_code", self.referral_code.as_deref())
    }
    fn to_batch(rows: &[&Wallet], synced_at: DateTime<Utc>) -> Result<RecordBatch, ArrowError> {
        let columns = vec![
            strings(rows, |w| Some(w.agent_id.as_str())),
            strings(rows, |w| w.wallet_address.as_deref()),
            display_doubles(rows, |w| w.balance_usd),
            Arc::new(rows.iter().map(|w| Some(w.active_escrow_count)).collect::<Int32Array>()) as ArrayRef,
            display_doubles(rows, |w| w.total_earned_usd),
            strings(rows, |w| w.referral_code.as_deref()),
            times(rows, |w| Some(w.registered_at)),
            times(rows, |_| Some(synced_at)),
        ];
        RecordBatch::try_new(WALLETS.arrow_schema(), columns)
    }
}

impl Synced for Escrow {
    const SPEC: &'static TableSpec = &ESCROWS;
    const ENTITY: &'static str = "escrow";
    const MODE: WriteMode = WriteMode::Upsert;
    const BOOKKEEPING: &'static [&'static str] = &["last_synced_at"];

    fn pages(listings: &dyn Listings, query: ListQuery) -> PageStream<'_, Self> {
        listings.escrows(query)
    }

    fn key(&self) -> &str {
        &self.escrow_id
    }
    fn changed_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn check(&self) -> Result<(), String> {
        check::id("escrow_id", &self.escrow_id)?;
        check::id("buyer_agent_id", &self.buyer_agent_id)?;
        check::id("seller_agent_id", &self.seller_agent_id)?;
        check::text("description", Some(&self.description))?;
        check::metadata("metadata", self.metadata.as_ref())?;
        check::optional_id("tx_id", self.tx_id.as_deref())
    }
    fn to_batch(rows: &[&Escrow], synced_at: DateTime<Utc>) -> Result<RecordBatch, ArrowError> {
        let metadata: Vec<Option<String>> =
            rows.iter().map(|e| e.metadata.as_ref().filter(|m| !m.is_null()).map(|m| m.to_string())).collect();
        let columns = vec![
            strings(rows, |e| Some(e.escrow_id.as_str())),
            strings(rows, |e| Some(e.buyer_agent_id.as_str())),
            strings(rows, |e| Some(e.seller_agent_id.as_str())),
            money(rows, |e| e.amount_usd)?,
            strings(rows, |e| Some(e.description.as_str())),
            Arc::new(metadata.iter().map(|m| m.as_deref()).collect::<StringArray>()) as ArrayRef,
            strings(rows, |e| Some(e.status.as_str())),
            times(rows, |e| Some(e.created_at)),
            times(rows, |e| Some(e.updated_at)),
            strings(rows, |e| e.tx_id.as_deref()),
            times(rows, |_| Some(synced_at)),
        ];
        RecordBatch::try_new(ESCROWS.arrow_schema(), columns)
    }
}

/// Days since 1970-01-01 of a UTC instant (Arrow `Date32`).
fn day(t: DateTime<Utc>) -> i32 {
    t.timestamp().div_euclid(86_400) as i32
}

impl Synced for Transaction {
    const SPEC: &'static TableSpec = &TRANSACTIONS;
    const ENTITY: &'static str = "transaction";
    const MODE: WriteMode = WriteMode::AppendOnly;
    const BOOKKEEPING: &'static [&'static str] = &["synced_at"];

    fn pages(listings: &dyn Listings, query: ListQuery) -> PageStream<'_, Self> {
        listings.transactions(query)
    }

    fn key(&self) -> &str {
        &self.tx_id
    }
    fn changed_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn check(&self) -> Result<(), String> {
        check::id("tx_id", &self.tx_id)?;
        check::id("agent_id", &self.agent_id)?;
        check::optional_id("counterparty_agent_id", self.counterparty_agent_id.as_deref())?;
        check::key("idempotency_key", self.idempotency_key.as_deref())?;
        // A payout's reason, an escrow's id or "faucet": free text.
        check::text("reference", self.reference.as_deref())
    }
    fn to_batch(rows: &[&Transaction], synced_at: DateTime<Utc>) -> Result<RecordBatch, ArrowError> {
        let columns = vec![
            strings(rows, |t| Some(t.tx_id.as_str())),
            strings(rows, |t| Some(t.kind.as_str())),
            strings(rows, |t| Some(t.agent_id.as_str())),
            strings(rows, |t| t.counterparty_agent_id.as_deref()),
            money(rows, |t| t.amount_usd)?,
            strings(rows, |t| t.idempotency_key.as_deref()),
            strings(rows, |t| t.reference.as_deref()),
            times(rows, |t| Some(t.created_at)),
            Arc::new(rows.iter().map(|t| Some(day(t.created_at))).collect::<Date32Array>()) as ArrayRef,
            times(rows, |_| Some(synced_at)),
        ];
        RecordBatch::try_new(TRANSACTIONS.arrow_schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_instant() {
        let t = DateTime::parse_from_rfc3339("1970-01-02T23:59:59Z").unwrap().with_timezone(&Utc);
        assert_eq!(day(t), 1);
        let t = DateTime::parse_from_rfc3339("1969-12-31T23:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(day(t), -1);
    }
}
