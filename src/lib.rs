//! pfsync: the financial layer between the Purple Flea payments API and a Delta Lake warehouse.

pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod errors;
pub mod exit;
pub mod hooks;
pub mod http;
pub mod import;
pub mod ledger;
pub mod logging;
pub mod maintain;
pub mod mcp;
pub mod mlflow;
pub mod money;
pub mod operation;
pub mod ops;
pub mod payouts;
pub mod progress;
pub mod provider;
pub mod reconcile;
pub mod rng;
pub mod sandbox;
pub mod secret;
pub mod stop;
pub mod sync;
pub mod tables;
pub mod text;

/// The provider's micro-dollar amounts, at the path the rest of the crate imports them from.
pub use money::micros;
