//! Wallet sync end to end: the sandbox (in-process) serving N agents, `sync_wallets` into a temp Delta
//! table: a first full load, then a second full sync (MERGE). Reports time, rows/s and peak RSS (which
//! includes the in-process sandbox's own copy of the data).
//!
//! `cargo bench --bench wallet_sync` (PFSYNC_BENCH_AGENTS, default 100000).

#[path = "common.rs"]
mod common;

use std::time::Instant;

use pfsync::api::{Client, ClientConfig};
use pfsync::progress::Progress;
use pfsync::sandbox::{Sandbox, SandboxConfig, default_key};
use pfsync::sync::{SyncOptions, sync_wallets};
use pfsync::tables::{CommitInfo, Warehouse};

fn main() {
    let agents = common::env_or("PFSYNC_BENCH_AGENTS", 100_000usize);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let t = Instant::now();
        let sb = Sandbox::start(SandboxConfig::for_tests(agents)).await.expect("sandbox");
        println!("wallet sync: {} wallets (sandbox seeded in {:.2} s)", agents + 1, t.elapsed().as_secs_f64());
        let client = Client::new(ClientConfig::new(sb.base_url(), sb.base_url(), default_key())).expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(dir.path()).expect("warehouse");
        for (run, label) in [("bench-1", "first load (append)"), ("bench-2", "full re-sync (MERGE)")] {
            let commit = CommitInfo { run_id: run.into(), step: "sync.wallets" };
            let t = Instant::now();
            let r =
                sync_wallets(&client, &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.expect("sync");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "  {label:<22} {:>8.2} s  {:>9.0} rows/s  (read {}, inserted {}, updated {}, {} pages)",
                secs,
                r.rows_read as f64 / secs,
                r.rows_read,
                r.inserted,
                r.updated,
                r.pages
            );
        }
        println!("  peak RSS {:.0} MiB (pfsync + in-process sandbox)", common::peak_rss_mib().unwrap_or(0.0));
    });
}
