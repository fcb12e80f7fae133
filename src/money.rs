//! The one exact USD amount type: whole cents in an `i64`.
//!
//! Money never passes through a binary float on its way in or out: JSON numbers are read from their
//! source text (serde_json's `RawValue`), Delta columns are `Decimal128(18,2)`, and the only `f64`
//! produced is for the seed's published `DOUBLE` wallet columns ([`Usd::to_f64_lossy_for_display_column`]).

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Arrow/Delta precision and scale for every money column pfsync owns.
pub const DECIMAL_PRECISION: u8 = 18;
pub const DECIMAL_SCALE: i8 = 2;

/// The contract's ceiling: 999,999,999,999.99 USD.
pub const MAX_CENTS: i64 = 99_999_999_999_999;

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
/// use [`Usd::positive`] where the contract demands an amount greater than zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(i64);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// From whole cents, refusing values beyond the contract's range.
    pub fn from_cents(cents: i64) -> Result<Usd, MoneyError> {
        if cents.unsigned_abs() > MAX_CENTS as u64 {
            return Err(MoneyError::Overflow(format_cents(cents as i128)));
        }
        Ok(Usd(cents))
    }

    pub fn cents(self) -> i64 {
        self.0
    }

    /// Parse a decimal text exactly: `12`, `12.5`, `-0.01`, `1.50`, `1.5e1`. Trailing zeros beyond
    /// two decimals are accepted (`1.230` is exactly 1.23); a non-zero third decimal is refused.
    pub fn parse(text: &str) -> Result<Usd, MoneyError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let lower = s.to_ascii_lowercase();
        let unsigned = lower.trim_start_matches(['+', '-']);
        if matches!(unsigned, "nan" | "inf" | "infinity") {
            return Err(MoneyError::NotFinite(clip(text)));
        }
        let bad = || MoneyError::NotANumber(clip(text));
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(i) => {
                let exp_text = &body[i + 1..];
                let exp: i64 = exp_text.parse().map_err(|_| bad())?;
                (&body[..i], exp)
            }
            None => (body, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits as one integer with `scale` decimals, then shift by the exponent.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let scale = (frac_part.len() as i64).saturating_sub(exponent);
        // Trailing zeros carry no value: strip them so `1.230` and `1e2` normalise.
        let trimmed = digits.trim_end_matches('0');
        let scale = scale.saturating_sub((digits.len() - trimmed.len()) as i64);
        if trimmed.is_empty() {
            return Ok(Usd(0));
        }
        if scale > 2 {
            return Err(MoneyError::TooManyDecimals(clip(text)));
        }
        // cents = trimmed * 10^(2 - scale); more than 17 significant digits is past the maximum anyway.
        let zeros = 2i64.saturating_sub(scale);
        if (trimmed.len() as i64).saturating_add(zeros) > 17 {
            return Err(MoneyError::Overflow(clip(text)));
        }
        let mut cents: i64 = trimmed.parse().map_err(|_| bad())?;
        for _ in 0..zeros {
            cents *= 10;
        }
        let cents = if negative { -cents } else { cents };
        Usd::from_cents(cents).map_err(|_| MoneyError::Overflow(clip(text)))
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
        let cents: i128 = if scale <= DECIMAL_SCALE {
            let factor =
                10i128.checked_pow((DECIMAL_SCALE - scale) as u32).ok_or(MoneyError::DecimalScale { scale })?;
            raw.checked_mul(factor).ok_or_else(|| MoneyError::Overflow(raw.to_string()))?
        } else {
            let factor =
                10i128.checked_pow((scale - DECIMAL_SCALE) as u32).ok_or(MoneyError::DecimalScale { scale })?;
            if raw % factor != 0 {
                return Err(MoneyError::DecimalScale { scale });
            }
            raw / factor
        };
        let cents = i64::try_from(cents).map_err(|_| MoneyError::Overflow(format_cents(cents)))?;
        Usd::from_cents(cents)
    }

    /// The `Decimal128(18,2)` cell value.
    pub fn to_decimal128(self) -> i128 {
        self.0 as i128
    }

    /// The nearest `f64`, only for the seed's published `DOUBLE` columns (`balance_usd`,
    /// `total_earned_usd`). Integer cents below 2^53 are exact in an f64 and IEEE division is correctly
    /// rounded, so this is the double closest to the decimal value: a conversion, not arithmetic.
    pub fn to_f64_lossy_for_display_column(self) -> f64 {
        self.0 as f64 / 100.0
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).and_then(|c| Usd::from_cents(c).ok())
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).and_then(|c| Usd::from_cents(c).ok())
    }
}

fn clip(text: &str) -> String {
    // Bad input may be megabytes long; an error message quotes only its start.
    const LIMIT: usize = 40;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn format_cents(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl fmt::Display for Usd {
    /// Always two decimals: `12.50`, `-0.01`, `0.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cents(self.0 as i128))
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usd({self})")
    }
}

impl FromStr for Usd {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Usd, MoneyError> {
        Usd::parse(s)
    }
}

impl Serialize for Usd {
    /// A JSON number with two decimals, written from its text (never through an f64).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Usd {
    /// A JSON number or a string holding one, parsed from its source text.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        let text = if text.starts_with('"') {
            serde_json::from_str::<String>(text).map_err(D::Error::custom)?
        } else {
            text.to_string()
        };
        Usd::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
