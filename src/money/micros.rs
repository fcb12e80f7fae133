//! Provider amounts in micro-dollars (six decimals): what Purple Flea's live services report. Escrow takes
//! a 1% commission rounded to 6 decimals (12.34 -> 0.1234), and balances are SQLite REALs that carry binary
//! noise (`87.66000000000001`). [`Usd`] (cents) stays the type of every amount pfsync *requests*; this one
//! is for what the provider *reports*, in `Decimal128(18,6)` columns.
//!
//! A JSON number is read from its source text (serde_json's `RawValue`), never through an `f64`. Digits
//! past the sixth decimal are the float noise of the provider's own arithmetic, not money: they are rounded
//! half away from zero, in decimal, on the text (`87.66000000000001` -> 87.660000).

use serde_json::value::RawValue;

use super::fixed::{Excess, Scale, money_traits};
use super::{MoneyError, Usd};

pub const MICROS_PRECISION: u8 = 18;
pub const MICROS_SCALE: i8 = 6;
/// 999,999,999,999.999999 USD: what fits `Decimal128(18,6)`.
pub const MAX_MICROS: i64 = 999_999_999_999_999_999;

/// Six decimals, more rounded, printed in the shortest exact form (`0.1234`, `12.34`, `5`).
const MICROS: Scale =
    Scale { decimals: MICROS_SCALE as u32, max: MAX_MICROS, excess: Excess::RoundHalfAwayFromZero, shortest: true };

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(i64);

money_traits!(Micros, MICROS);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_raw(micros: i64) -> Result<Micros, MoneyError> {
        MICROS.check(micros.into()).map(Micros)
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
        MICROS.parse(text).map(Micros)
    }

    pub fn checked_add(self, o: Micros) -> Option<Micros> {
        MICROS.checked_add(self.0, o.0).map(Micros)
    }

    pub fn checked_sub(self, o: Micros) -> Option<Micros> {
        MICROS.checked_sub(self.0, o.0).map(Micros)
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
        MICROS.units_of_decimal128(raw, scale).map(Micros)
    }

    /// The nearest `f64`, only for the seed's published `DOUBLE` wallet columns.
    pub fn to_f64_lossy_for_display_column(self) -> f64 {
        MICROS.to_f64_lossy(self.0)
    }

    /// The JSON number to send, exact: `12.34`, `0.1`, `5`.
    pub fn to_json_number(self) -> Box<RawValue> {
        RawValue::from_string(self.to_string()).expect("a decimal is a JSON number")
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
    fn an_exponent_is_only_another_way_to_write_the_digits() {
        for (text, written_out) in [("1e-50", "0.0000000001"), ("5e-7", "0.0000005"), ("0e99", "0"), ("1.2e1", "12")] {
            assert_eq!(Micros::parse(text), Micros::parse(written_out), "{text}");
        }
        assert!(matches!(Micros::parse("1e19"), Err(MoneyError::Overflow(_))));
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
