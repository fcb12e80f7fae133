//! Shared set-up: a sandbox, a client for it, a temp warehouse.

use std::time::Duration;

use pfsync::http::{ClientConfig, Repeat, RetryPolicy};
use pfsync::provider::seed::SeedClient as Client;
use pfsync::sandbox::{Sandbox, SandboxConfig, default_key};
use pfsync::tables::Warehouse;

pub async fn sandbox(agents: usize) -> Sandbox {
    Sandbox::start(SandboxConfig::for_tests(agents)).await.expect("sandbox starts")
}

/// A client with quick retries, so fault tests finish fast.
pub fn client(sb: &Sandbox) -> Client {
    seed_client(client_config(sb))
}

/// The seed's client with these settings against their base URL (the faucet there too). The sandbox keeps
/// keys, as the seed's contract declares: keyed POSTs may be repeated.
pub fn seed_client(cfg: ClientConfig) -> Client {
    let faucet = cfg.base_url.clone();
    Client::new(cfg, faucet, Repeat::KeyedPosts).expect("client")
}

pub fn client_config(sb: &Sandbox) -> ClientConfig {
    let mut cfg = ClientConfig::new(sb.base_url(), default_key());
    cfg.timeout = Duration::from_secs(5);
    cfg.retry = RetryPolicy {
        max_attempts: 6,
        max_elapsed: Duration::from_secs(20),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    };
    cfg
}

pub fn warehouse(dir: &tempfile::TempDir) -> Warehouse {
    Warehouse::local(dir.path()).expect("warehouse")
}

pub fn usd(s: &str) -> pfsync::money::Usd {
    pfsync::money::Usd::parse(s).expect("amount")
}

/// A row in purpleflea.ops.runs, as the binary writes one per step: `step` under `run_id`, ending now.
pub async fn record_step(wh: &Warehouse, run_id: &str, step: &'static str, rows: i64, exit_code: i32) {
    let now = chrono::Utc::now();
    let record = pfsync::ops::RunRecord {
        step,
        started_at: now,
        finished_at: now,
        rows: Some(rows),
        amount: None,
        counts: Default::default(),
        exit_code,
    };
    let commit = pfsync::tables::CommitInfo { run_id: run_id.to_string(), step };
    pfsync::ops::record(wh, &commit, &record).await.expect("record the step");
}

/// The single number a `SELECT count(*) ...` returns.
pub async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> i64 {
    let b = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.expect("collect");
    b[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().expect("a count").value(0)
}
