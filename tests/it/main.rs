//! Integration tests: the sandbox on 127.0.0.1 port 0, real Delta tables in temp folders, Purple Flea's own
//! services on a local test bed ([`live_bed`]). One binary so the deltalake+datafusion link happens once.

mod api_contract;
mod cli;
mod common;
mod databricks_mlflow;
mod ecosystem;
mod env_proxies;
mod exactly_once;
mod examples;
mod exit_codes;
pub mod feeds;
mod follow;
mod hostile;
mod idempotency;
mod import;
mod jobs_bundle;
mod live_bed;
mod live_mcp;
mod live_payouts;
mod live_resolve;
mod live_sync;
mod maintain;
mod mcp;
pub mod mlflow_server;
mod operator_mistakes;
mod pagination;
pub mod payouts;
mod progress;
mod proxy;
mod readme;
mod reconcile;
mod reconcile_incremental;
mod report_browser;
mod resilience;
mod resolve;
pub mod rules;
#[cfg(feature = "s3")]
mod s3;
mod secrets;
mod simulation;
mod sources;
mod sql_files;
mod status_view;
mod stop;
mod sync_incremental;
#[cfg(feature = "unity")]
mod unity;
mod upgrade;
mod wallet_sync;
mod wheel;
