//! Opaque page cursors: the position `(timestamp µs, id)` of the last row handed out, hex-encoded so
//! clients treat it as a token and never build one.

use super::refusal::ContractError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!("{}|{}", self.at, self.id);
        let mut out = String::with_capacity(3 + raw.len() * 2);
        out.push_str("c1_");
        for b in raw.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    pub fn decode(token: &str) -> Result<Cursor, ContractError> {
        let bad = || ContractError::invalid("cursor is not one this server issued");
        let hex = token.strip_prefix("c1_").ok_or_else(bad)?;
        if hex.len() % 2 != 0 || hex.len() > 1024 {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let (at, id) = raw.split_once('|').ok_or_else(bad)?;
        Ok(Cursor { at: at.parse().map_err(|_| bad())?, id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let c = Cursor { at: 1_700_000_000_000_000, id: "agent|007".into() };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "c1_", "c1_zz", "c1_4", "x1_3030", "c1_ff"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
