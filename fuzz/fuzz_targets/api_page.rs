//! Any bytes as a list page from the API: decoding gives rows or per-row errors, never a panic.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/money/mod.rs"]
mod money;
#[allow(dead_code)]
#[path = "../../src/provider/records.rs"]
mod records;
#[allow(dead_code, unused_imports)]
#[path = "../../src/provider/seed/wire.rs"]
mod wire;
/// The paths those files name their neighbours by.
mod provider {
    pub(crate) use super::records;
    pub mod seed {
        pub(crate) use super::super::wire;
    }
}
#[allow(dead_code)]
#[path = "../../src/text.rs"]
mod text;

use libfuzzer_sys::fuzz_target;
use money::micros;
use provider::records::{Escrow, Transaction, Wallet};
use provider::seed::wire::{RawPage, decode_rows};

fuzz_target!(|data: &[u8]| {
    let decode = |data: &[u8]| serde_json::from_slice::<RawPage>(data).ok();
    if let Some(p) = decode(data) {
        let page = decode_rows::<Wallet>(p);
        assert!(page.rows.iter().all(|r| r.as_ref().err().is_none_or(|e| e.id.chars().count() <= 128)));
    }
    if let Some(p) = decode(data) {
        let _ = decode_rows::<Escrow>(p);
    }
    if let Some(p) = decode(data) {
        let _ = decode_rows::<Transaction>(p);
    }
});
