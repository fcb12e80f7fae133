//! Sync for Purple Flea's live services, which list nothing: wallets one per held key (`wallets.rs`),
//! escrows by id (`escrows.rs`), and each held key's ledger window, appended by entry id with gaps recorded
//! (`ledger.rs`, over the pure `chain.rs`).

pub mod chain;
pub mod escrows;
pub mod ledger;
pub mod wallets;

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, StringArray, TimestampMicrosecondArray};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

use crate::micros::{MICROS_PRECISION, MICROS_SCALE, Micros};

pub use escrows::sync_live_escrows;
pub use ledger::sync_live_ledgers;
pub use wallets::sync_live_wallets;

pub(crate) fn texts<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

pub(crate) fn instants(v: impl Iterator<Item = Option<DateTime<Utc>>>) -> ArrayRef {
    Arc::new(v.map(|t| t.map(|t| t.timestamp_micros())).collect::<TimestampMicrosecondArray>().with_timezone("UTC"))
}

/// Exact provider amounts, `DECIMAL(18,6)`.
pub(crate) fn micros(v: impl Iterator<Item = Option<Micros>>) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(
        v.map(|m| m.map(Micros::to_decimal128))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(MICROS_PRECISION, MICROS_SCALE)?,
    ))
}
