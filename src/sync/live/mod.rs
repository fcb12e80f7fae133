//! Sync for Purple Flea's live services, which list nothing: wallets one per held key (`wallets.rs`),
//! escrows by id (`escrows.rs`), and each held key's ledger window, appended by entry id with gaps recorded
//! (`ledger.rs`, over the pure `chain.rs`).

pub mod chain;
pub mod escrows;
pub mod ledger;
pub mod wallets;

pub use escrows::sync_live_escrows;
pub use ledger::sync_live_ledgers;
pub use wallets::sync_live_wallets;
