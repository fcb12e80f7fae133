//! Arrow columns of the types pfsync's tables use, built from row values (text, instants, exact
//! provider amounts).

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, StringArray, TimestampMicrosecondArray};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

use crate::micros::{MICROS_PRECISION, MICROS_SCALE, Micros};

pub fn texts<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

pub fn instants(v: impl Iterator<Item = Option<DateTime<Utc>>>) -> ArrayRef {
    Arc::new(v.map(|t| t.map(|t| t.timestamp_micros())).collect::<TimestampMicrosecondArray>().with_timezone("UTC"))
}

/// Exact provider amounts, `DECIMAL(18,6)`.
pub fn micros(v: impl Iterator<Item = Option<Micros>>) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(
        v.map(|m| m.map(Micros::to_decimal128))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(MICROS_PRECISION, MICROS_SCALE)?,
    ))
}
