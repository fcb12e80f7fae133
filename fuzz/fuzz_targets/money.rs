//! Any text or JSON as an amount: parsing never panics, and what parses prints back to the same amount.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/money/mod.rs"]
mod money;
#[allow(dead_code)]
#[path = "../../src/text.rs"]
mod text;

use libfuzzer_sys::fuzz_target;
use money::Usd;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(u) = Usd::parse(text) {
            assert_eq!(Usd::parse(&u.to_string()), Ok(u), "{text:?} round-trips");
            assert_eq!(Usd::from_cents(u.cents()), Ok(u));
        }
        let _ = Usd::parse_positive(text);
    }
    if let Ok(u) = serde_json::from_slice::<Usd>(data) {
        let again: Usd = serde_json::from_str(&serde_json::to_string(&u).expect("serialize")).expect("reparse");
        assert_eq!(again, u, "JSON round-trips");
    }
});
