//! pfsync: the financial layer between the Purple Flea payments API and a Delta Lake warehouse.

pub mod api;
pub mod cli;
pub mod config;
pub mod money;
pub mod rng;
pub mod sandbox;
pub mod secret;
pub mod tables;
pub mod progress;
pub mod sync;
pub mod app;
pub mod logging;
