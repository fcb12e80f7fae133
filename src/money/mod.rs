//! The one exact USD amount type: whole cents in an `i64`.
//!
//! Money never passes through a binary float on its way in or out: JSON numbers are read from their
//! source text (serde_json's `RawValue`), Delta columns are `Decimal128(18,2)`, and the only `f64`
//! produced is for the seed's published `DOUBLE` wallet columns ([`Usd::to_f64_lossy_for_display_column`]).
//! [`micros::Micros`] is the provider's six-decimal counterpart; both are built on [`fixed`].

mod fixed;
pub mod micros;

use std::str::FromStr;

use fixed::{Excess, Scale, money_traits};

/// Arrow/Delta precision and scale for every money column pfsync owns.
pub const DECIMAL_PRECISION: u8 = 18;
pub const DECIMAL_SCALE: i8 = 2;

/// The contract's ceiling: 999,999,999,999.99 USD.
pub const MAX_CENTS: i64 = 99_999_999_999_999;

/// Two decimals, a third refused, always printed with two (`12.50`, `-0.01`, `0.00`).
const CENTS: Scale = Scale { decimals: DECIMAL_SCALE as u32, max: MAX_CENTS, excess: Excess::Refuse, shortest: false };

/// Why a text or number is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a number")]
    NotANumber(String),
    #[error("amount {0:?} is not finite (NaN or Infinity)")]
    NotFinite(String),
    #[error("amount {0:?} has more than two decimals")]
    TooManyDecimals(String),
    #[error("amount {0:?} is above the maximum of 999999999999.99")]
    Overflow(String),
    #[error("amount {0} must be greater than zero")]
    NotPositive(Usd),
    #[error("decimal value with scale {scale} cannot be represented in cents exactly")]
    DecimalScale { scale: i8 },
}

/// An exact amount of US dollars, in cents. May be zero or negative (balances, differences);
/// use [`Usd::positive`] where the contract demands an amount greater than zero. Displays and serializes
/// with two decimals (`12.50`); deserializes from a JSON number or a string holding one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(i64);

money_traits!(Usd, CENTS);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// From whole cents, refusing values beyond the contract's range.
    pub fn from_cents(cents: i64) -> Result<Usd, MoneyError> {
        CENTS.check(cents.into()).map(Usd)
    }

    pub fn cents(self) -> i64 {
        self.0
    }

    /// Parse a decimal text exactly: `12`, `12.5`, `-0.01`, `1.50`, `1.5e1`. Trailing zeros beyond
    /// two decimals are accepted (`1.230` is exactly 1.23); a non-zero third decimal is refused.
    pub fn parse(text: &str) -> Result<Usd, MoneyError> {
        CENTS.parse(text).map(Usd)
    }

    /// Parse an amount the contract requires to be positive (payouts, escrows).
    pub fn parse_positive(text: &str) -> Result<Usd, MoneyError> {
        Usd::parse(text)?.positive()
    }

    /// `Ok(self)` when greater than zero.
    pub fn positive(self) -> Result<Usd, MoneyError> {
        if self.0 <= 0 { Err(MoneyError::NotPositive(self)) } else { Ok(self) }
    }

    /// A `DOUBLE` from an upstream table, accepted only when it is exactly a number of cents: the value's
    /// shortest decimal form (what a user sees in SQL) is parsed exactly, so `0.1` is 10 cents and
    /// `0.125` or `1e300` are refused.
    pub fn from_f64_exact(value: f64) -> Result<Usd, MoneyError> {
        if !value.is_finite() {
            return Err(MoneyError::NotFinite(value.to_string()));
        }
        Usd::parse(&format!("{value}"))
    }

    /// The value of a `Decimal128(_, scale)` cell, exact or refused.
    pub fn from_decimal128(raw: i128, scale: i8) -> Result<Usd, MoneyError> {
        CENTS.units_of_decimal128(raw, scale).map(Usd)
    }

    /// The `Decimal128(18,2)` cell value.
    pub fn to_decimal128(self) -> i128 {
        self.0 as i128
    }

    /// The nearest `f64`, only for the seed's published `DOUBLE` columns (`balance_usd`,
    /// `total_earned_usd`).
    pub fn to_f64_lossy_for_display_column(self) -> f64 {
        CENTS.to_f64_lossy(self.0)
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        CENTS.checked_add(self.0, other.0).map(Usd)
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        CENTS.checked_sub(self.0, other.0).map(Usd)
    }
}

impl FromStr for Usd {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Usd, MoneyError> {
        Usd::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[test]
    fn parses_the_contract_examples() {
        assert_eq!(Usd::parse("12.5").unwrap().cents(), 1250);
        assert_eq!(Usd::parse("0.01").unwrap().cents(), 1);
        assert_eq!(Usd::parse("100").unwrap().cents(), 10000);
        assert_eq!(Usd::parse("-3.07").unwrap().cents(), -307);
        assert_eq!(Usd::parse("1.230").unwrap().cents(), 123);
        assert_eq!(Usd::parse("1.5e1").unwrap().cents(), 1500);
        assert_eq!(Usd::parse("125e-2").unwrap().cents(), 125);
        assert_eq!(Usd::parse("0").unwrap(), Usd::ZERO);
        assert_eq!(Usd::parse("999999999999.99").unwrap().cents(), MAX_CENTS);
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        assert!(matches!(Usd::parse("0.001"), Err(MoneyError::TooManyDecimals(_))));
        assert!(matches!(Usd::parse("1e-3"), Err(MoneyError::TooManyDecimals(_))));
        assert!(matches!(Usd::parse("NaN"), Err(MoneyError::NotFinite(_))));
        assert!(matches!(Usd::parse("-Infinity"), Err(MoneyError::NotFinite(_))));
        assert!(matches!(Usd::parse("1000000000000"), Err(MoneyError::Overflow(_))));
        assert!(matches!(Usd::parse("1e300"), Err(MoneyError::Overflow(_))));
        assert!(matches!(Usd::parse(""), Err(MoneyError::Empty)));
        assert!(matches!(Usd::parse("12,50"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usd::parse("1e"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usd::parse("."), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usd::parse("--1"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usd::parse("1e99999999999999999999"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usd::parse("1e-9223372036854775808"), Err(MoneyError::TooManyDecimals(_))));
        assert!(matches!(Usd::parse("1e9223372036854775807"), Err(MoneyError::Overflow(_))));
        assert!(matches!(Usd::parse_positive("0"), Err(MoneyError::NotPositive(_))));
        assert!(matches!(Usd::parse_positive("-1"), Err(MoneyError::NotPositive(_))));
    }

    #[test]
    fn error_messages_quote_only_the_start_of_huge_input() {
        let huge = "9".repeat(10_000_000);
        let msg = Usd::parse(&huge).unwrap_err().to_string();
        assert!(msg.len() < 200, "{}", msg.len());
    }

    #[test]
    fn doubles_are_accepted_only_when_exact_in_cents() {
        assert_eq!(Usd::from_f64_exact(0.1).unwrap().cents(), 10);
        assert_eq!(Usd::from_f64_exact(19.99).unwrap().cents(), 1999);
        assert!(Usd::from_f64_exact(0.125).is_err());
        assert!(Usd::from_f64_exact(f64::NAN).is_err());
        assert!(Usd::from_f64_exact(f64::INFINITY).is_err());
        assert!(Usd::from_f64_exact(1e300).is_err());
    }

    #[test]
    fn decimal128_conversion_is_exact() {
        assert_eq!(Usd::from_decimal128(1250, 2).unwrap().cents(), 1250);
        assert_eq!(Usd::from_decimal128(125, 1).unwrap().cents(), 1250);
        assert_eq!(Usd::from_decimal128(12500, 3).unwrap().cents(), 1250);
        assert!(Usd::from_decimal128(12501, 3).is_err());
        assert!(Usd::from_decimal128(i128::MAX, 2).is_err());
        assert_eq!(Usd::parse("7.25").unwrap().to_decimal128(), 725);
    }

    #[test]
    fn json_round_trip_without_floats() {
        #[derive(Serialize, Deserialize)]
        struct Body {
            amount_usd: Usd,
            other: Option<Usd>,
        }
        let b: Body = serde_json::from_str(r#"{"amount_usd": 0.07, "other": "12.5"}"#).unwrap();
        assert_eq!(b.amount_usd.cents(), 7);
        assert_eq!(b.other.unwrap().cents(), 1250);
        let none: Body = serde_json::from_str(r#"{"amount_usd": 1, "other": null}"#).unwrap();
        assert!(none.other.is_none());
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"amount_usd":0.07,"other":12.50}"#);
        assert!(serde_json::from_str::<Body>(r#"{"amount_usd": 0.071, "other": null}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"amount_usd": true, "other": null}"#).is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(cents in -MAX_CENTS..=MAX_CENTS) {
            let usd = Usd::from_cents(cents).unwrap();
            prop_assert_eq!(Usd::parse(&usd.to_string()).unwrap(), usd);
            let json = serde_json::to_string(&usd).unwrap();
            prop_assert_eq!(serde_json::from_str::<Usd>(&json).unwrap(), usd);
        }

        #[test]
        fn f64_column_round_trips_through_its_shortest_form(cents in -MAX_CENTS..=MAX_CENTS) {
            let usd = Usd::from_cents(cents).unwrap();
            prop_assert_eq!(Usd::from_f64_exact(usd.to_f64_lossy_for_display_column()).unwrap(), usd);
        }

        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = Usd::parse(&s);
        }

        #[test]
        fn parse_agrees_with_integer_arithmetic(int in 0i64..1_000_000_000_000, frac in 0u8..100) {
            let text = format!("{int}.{frac:02}");
            prop_assert_eq!(Usd::parse(&text).unwrap().cents(), int * 100 + frac as i64);
        }
    }
}
