//! The fixed-point core under [`Usd`](super::Usd) (cents) and [`Micros`](super::micros::Micros)
//! (micro-dollars): an `i64` count of 10^-decimals dollars. Parsing, the range, Decimal128, text and JSON
//! are written here once; the two types stay apart so that cents and micros never mix.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::MoneyError;
use crate::text::clip;

/// How one money type counts: its decimals, its range, and its policy for digits past them.
pub(crate) struct Scale {
    pub decimals: u32,
    /// The largest magnitude, in units (cents, micros).
    pub max: i64,
    pub excess: Excess,
    /// Display all decimals (`12.50`) or the shortest exact form (`12.5`, `5`).
    pub shortest: bool,
}

/// What parsing does with a non-zero digit past the scale's decimals.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Excess {
    /// A request's amount: `0.001` USD is not an amount the contract can carry.
    Refuse,
    /// A provider's report: the digits are float noise of its own arithmetic, rounded in decimal.
    RoundHalfAwayFromZero,
}

/// An i64 holds every 18-digit number; the range check refuses what is too large among them.
const MAX_DIGITS: u64 = 18;

impl Scale {
    /// `units` when within the range.
    pub fn check(&self, units: i128) -> Result<i64, MoneyError> {
        match i64::try_from(units) {
            Ok(u) if u.unsigned_abs() <= self.max.unsigned_abs() => Ok(u),
            _ => Err(MoneyError::Overflow(self.format(units))),
        }
    }

    /// A decimal text, exactly: `12`, `-0.01`, `1.50`, `1.5e1`, `125e-2`. Trailing zeros carry no value
    /// (`1.230` is 1.23 USD in cents); other digits past the decimals follow [`Excess`].
    pub fn parse(&self, text: &str) -> Result<i64, MoneyError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let unsigned = s.trim_start_matches(['+', '-']);
        if ["nan", "inf", "infinity"].iter().any(|w| unsigned.eq_ignore_ascii_case(w)) {
            return Err(MoneyError::NotFinite(quote(text)));
        }
        let bad = || MoneyError::NotANumber(quote(text));
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
            return Err(bad());
        }
        // The value is `significant` * 10^shift units, `significant` without leading or trailing zeros.
        // Exponents run to i64's ends: the arithmetic saturates, and a saturated shift is far out of range
        // either way.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let significant = digits.trim_end_matches('0');
        if significant.is_empty() {
            return Ok(0);
        }
        let shift = exponent
            .saturating_sub(frac_part.len() as i64)
            .saturating_add((digits.len() - significant.len()) as i64)
            .saturating_add(i64::from(self.decimals));
        let (kept, zeros, round_up) = if shift >= 0 {
            (significant, shift.unsigned_abs(), false)
        } else if self.excess == Excess::Refuse {
            return Err(MoneyError::TooManyDecimals(quote(text)));
        } else {
            // Half away from zero, on the first dropped digit; when even that one is a leading zero
            // (everything dropped and more), the value is below half a unit.
            let dropped = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
            match significant.len().checked_sub(dropped) {
                Some(cut) => (&significant[..cut], 0, significant.as_bytes()[cut] >= b'5'),
                None => ("", 0, false),
            }
        };
        if (kept.len() as u64).saturating_add(zeros) > MAX_DIGITS {
            return Err(MoneyError::Overflow(quote(text)));
        }
        let kept: i64 = if kept.is_empty() { 0 } else { kept.parse().map_err(|_| bad())? };
        let units = kept * 10i64.pow(zeros as u32) + i64::from(round_up);
        let units = if negative { -units } else { units };
        self.check(units.into()).map_err(|_| MoneyError::Overflow(quote(text)))
    }

    /// The value of a `Decimal128(_, scale)` cell, exact or refused.
    pub fn units_of_decimal128(&self, raw: i128, scale: i8) -> Result<i64, MoneyError> {
        let refused = MoneyError::DecimalScale { scale };
        // In i32: the difference of two i8 scales may not fit an i8.
        let (ours, theirs) = (self.decimals as i32, i32::from(scale));
        let units = if theirs <= ours {
            let factor = 10i128.checked_pow((ours - theirs) as u32).ok_or(refused)?;
            raw.checked_mul(factor).ok_or_else(|| MoneyError::Overflow(raw.to_string()))?
        } else {
            let factor = 10i128.checked_pow((theirs - ours) as u32).ok_or(refused.clone())?;
            if raw % factor != 0 {
                return Err(refused);
            }
            raw / factor
        };
        self.check(units)
    }

    /// The amount as text, with the scale's decimals or the shortest exact form.
    pub fn format(&self, units: i128) -> String {
        let sign = if units < 0 { "-" } else { "" };
        let one = 10u128.pow(self.decimals);
        let (whole, frac) = (units.unsigned_abs() / one, units.unsigned_abs() % one);
        let frac = format!("{frac:0width$}", width = self.decimals as usize);
        let frac = if self.shortest { frac.trim_end_matches('0') } else { &frac };
        if frac.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") }
    }

    /// The nearest `f64`, for the seed's published `DOUBLE` columns only. Integer units below 2^53 and a
    /// power of ten are exact in an f64 and IEEE division is correctly rounded, so this is the double
    /// closest to the decimal value: a conversion, not arithmetic.
    pub fn to_f64_lossy(&self, units: i64) -> f64 {
        units as f64 / 10i64.pow(self.decimals) as f64
    }

    pub fn checked_add(&self, a: i64, b: i64) -> Option<i64> {
        a.checked_add(b).and_then(|u| self.check(u.into()).ok())
    }

    pub fn checked_sub(&self, a: i64, b: i64) -> Option<i64> {
        a.checked_sub(b).and_then(|u| self.check(u.into()).ok())
    }

    /// A JSON number written from its text (never through an f64).
    pub fn serialize<S: Serializer>(&self, units: i64, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.format(units.into())).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }

    /// A JSON number or a string holding one, parsed from its source text.
    pub fn deserialize<'de, D: Deserializer<'de>>(&self, deserializer: D) -> Result<i64, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        let parsed = if text.starts_with('"') {
            self.parse(&serde_json::from_str::<String>(text).map_err(D::Error::custom)?)
        } else {
            self.parse(text)
        };
        parsed.map_err(D::Error::custom)
    }
}

/// Bad input may be megabytes long; an error message quotes only its start.
fn quote(text: &str) -> String {
    let start = clip(text, 40);
    if start.len() < text.len() { format!("{start}...") } else { text.to_string() }
}

/// Display, Debug, Serialize and Deserialize of a money type, from its [`Scale`].
macro_rules! money_traits {
    ($ty:ident, $scale:expr) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$scale.format(self.0.into()))
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $scale.serialize(self.0, serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                $scale.deserialize(deserializer).map($ty)
            }
        }
    };
}
pub(crate) use money_traits;

#[cfg(test)]
mod tests {
    use crate::money::micros::{MAX_MICROS, MICROS_SCALE, Micros};
    use crate::money::{DECIMAL_SCALE, MAX_CENTS, Usd};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn both_scales_round_trip_through_text_json_and_decimal128(
            cents in -MAX_CENTS..=MAX_CENTS,
            micros in -MAX_MICROS..=MAX_MICROS,
        ) {
            let usd = Usd::from_cents(cents).unwrap();
            prop_assert_eq!(Usd::parse(&usd.to_string()), Ok(usd));
            prop_assert_eq!(serde_json::from_str::<Usd>(&serde_json::to_string(&usd).unwrap()).unwrap(), usd);
            prop_assert_eq!(Usd::from_decimal128(usd.to_decimal128(), DECIMAL_SCALE), Ok(usd));
            let m = Micros::from_raw(micros).unwrap();
            prop_assert_eq!(Micros::parse(&m.to_string()), Ok(m));
            prop_assert_eq!(serde_json::from_str::<Micros>(&serde_json::to_string(&m).unwrap()).unwrap(), m);
            prop_assert_eq!(Micros::from_decimal128(m.to_decimal128(), MICROS_SCALE), Ok(m));
        }
    }
}
