//! Provider amounts in micro-dollars (six decimals): what Purple Flea's live services report. Escrow takes
//! a 1% commission rounded to 6 decimals (12.34 -> 0.1234), and balances are SQLite REALs that carry binary
//! noise (`87.66000000000001`). [`Usd`] (cents) stays the type of every amount pfsync *requests*; this one
//! is for what the provider *reports*, in `Decimal128(18,6)` columns.
//!
//! A JSON number is read from its source text (serde_json's `RawValue`), never through an `f64`. Digits
//! past the sixth decimal are the float noise of the provider's own arithmetic, not money: they are rounded
//! half away from zero, in decimal, on the text (`87.66000000000001` -> 87.660000).

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::money::{MoneyError, Usd};

pub const MICROS_PRECISION: u8 = 18;
pub const MICROS_SCALE: i8 = 6;
/// 999,999,999,999.999999 USD: what fits `Decimal128(18,6)`.
pub const MAX_MICROS: i64 = 999_999_999_999_999_999;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(i64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_raw(micros: i64) -> Result<Micros, MoneyError> {
        if micros.unsigned_abs() > MAX_MICROS as u64 {
            return Err(MoneyError::Overflow(micros.to_string()));
        }
        Ok(Micros(micros))
    }

    pub fn raw(self) -> i64 {
        self.0
    }

    pub fn from_usd(u: Usd) -> Micros {
        // |cents| <= 10^14, so times 10^4 stays below 10^18.
        Micros(u.cents() * 10_000)
    }

    /// The amount in cents, when it is a whole number of cents.
    pub fn to_usd_exact(self) -> Option<Usd> {
        (self.0 % 10_000 == 0).then(|| Usd::from_cents(self.0 / 10_000).ok()).flatten()
    }

    /// Parse a decimal text exactly (`12`, `-0.1234`, `1.5e-3`), rounding past six decimals.
    pub fn parse(text: &str) -> Result<Micros, MoneyError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let bad = || MoneyError::NotANumber(clip(text));
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], body[i + 1..].parse::<i64>().map_err(|_| bad())?),
            None => (body, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
        {
            if matches!(body.to_ascii_lowercase().as_str(), "nan" | "inf" | "infinity") {
                return Err(MoneyError::NotFinite(clip(text)));
            }
            return Err(bad());
        }
        if !(-40..=40).contains(&exponent) {
            return Err(MoneyError::Overflow(clip(text)));
        }
        // digits * 10^(exponent - frac_len) dollars = digits * 10^(6 + exponent - frac_len) micros.
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let shift = 6 + exponent - frac_part.len() as i64;
        let (keep, dropped) = if shift >= 0 {
            (format!("{digits}{}", "0".repeat(shift as usize)), "")
        } else {
            let cut = digits.len().saturating_sub((-shift) as usize);
            (digits[..cut].to_string(), &digits[cut..])
        };
        let keep = keep.trim_start_matches('0');
        if keep.len() > 18 {
            return Err(MoneyError::Overflow(clip(text)));
        }
        let mut micros: i64 = if keep.is_empty() { 0 } else { keep.parse().map_err(|_| bad())? };
        // Round half away from zero on the first dropped digit (a dropped part shorter than the shift
        // means leading zeros were dropped too: then it is below half).
        let dropped_len = if shift < 0 { (-shift) as usize } else { 0 };
        if dropped.len() == dropped_len && dropped.as_bytes().first().is_some_and(|d| *d >= b'5') {
            micros += 1;
        }
        let micros = if negative { -micros } else { micros };
        Micros::from_raw(micros).map_err(|_| MoneyError::Overflow(clip(text)))
    }

    pub fn checked_add(self, o: Micros) -> Option<Micros> {
        self.0.checked_add(o.0).and_then(|m| Micros::from_raw(m).ok())
    }

    pub fn checked_sub(self, o: Micros) -> Option<Micros> {
        self.0.checked_sub(o.0).and_then(|m| Micros::from_raw(m).ok())
    }

    /// The `Decimal128(18,6)` cell value.
    pub fn to_decimal128(self) -> i128 {
        self.0 as i128
    }

    /// The value of a `Decimal128(_, scale)` cell with scale <= 6.
    pub fn from_decimal128(raw: i128, scale: i8) -> Result<Micros, MoneyError> {
        if !(0..=MICROS_SCALE).contains(&scale) {
            return Err(MoneyError::DecimalScale { scale });
        }
        let m = raw
            .checked_mul(10i128.pow((MICROS_SCALE - scale) as u32))
            .ok_or_else(|| MoneyError::Overflow(raw.to_string()))?;
        Micros::from_raw(i64::try_from(m).map_err(|_| MoneyError::Overflow(raw.to_string()))?)
    }

    /// The nearest `f64`, only for the seed's published `DOUBLE` wallet columns.
    pub fn to_f64_lossy_for_display_column(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    /// The JSON number to send, exact: `12.34`, `0.1`, `5`.
    pub fn to_json_number(self) -> Box<RawValue> {
        RawValue::from_string(self.to_string()).expect("a decimal is a JSON number")
    }
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl fmt::Display for Micros {
    /// Shortest exact form: `0.1234`, `12.34`, `5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{frac:06}");
        write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl fmt::Debug for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Micros({self})")
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        let raw: &RawValue = <&RawValue>::deserialize(d)?;
        let text = raw.get();
        // A number arrives as its own text; a string holding a number is accepted too.
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        Micros::parse(text).map_err(D::Error::custom)
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json_number().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_numbers_are_read_exactly_and_float_noise_is_rounded_in_decimal() {
        let cases = [
            ("12.34", 12_340_000),
            ("0.1234", 123_400),
            ("0.123456", 123_456),
            ("87.66000000000001", 87_660_000),
            ("0.30000000000000004", 300_000),
            ("99.99999949999", 99_999_999),
            ("99.9999995", 100_000_000),
            ("-0.0000005", -1),
            ("1e-7", 0),
            ("1.5e1", 15_000_000),
            ("0", 0),
            ("\"2.5\"", 2_500_000),
        ];
        for (text, want) in cases {
            let got: Micros = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.raw(), want, "{text}");
        }
        for bad in ["", "abc", "1.2.3", "NaN", "1e999", "12345678901234567890"] {
            assert!(Micros::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_is_the_shortest_exact_text_and_round_trips() {
        for (m, s) in [(123_400, "0.1234"), (12_340_000, "12.34"), (5_000_000, "5"), (-1, "-0.000001")] {
            assert_eq!(Micros(m).to_string(), s);
            assert_eq!(Micros::parse(s).unwrap(), Micros(m));
        }
        assert_eq!(Micros::from_usd(Usd::from_cents(1234).unwrap()).to_string(), "12.34");
        assert_eq!(Micros(123_400).to_usd_exact(), None);
        assert_eq!(Micros(12_340_000).to_usd_exact(), Some(Usd::from_cents(1234).unwrap()));
    }
}
