//! Wallet sync end to end against a sandbox in its own process (`pfsync sandbox`, loopback), so the peak
//! RSS reported is pfsync's alone. For each size: a full load into an empty table, then 1% of wallets
//! changed through the API and an incremental re-sync. Each size runs in a fresh child process so its peak
//! RSS is its own.
//!
//! `cargo bench --bench wallet_sync` (PFSYNC_BENCH_SIZES=100000,1000000 by default: the sync issue's 1M and a
//! tenth of it).

mod common;

use std::time::Instant;

use pfsync::http::{ClientConfig, Repeat};
use pfsync::money::Usd;
use pfsync::progress::Progress;
use pfsync::provider::records::Wallet;
use pfsync::provider::seed::SeedClient;
use pfsync::provider::seed::wire::PayoutRequest;
use pfsync::sandbox::default_key;
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{CommitInfo, Warehouse};

fn main() {
    if std::env::var("PFSYNC_BENCH_ONE").is_err() {
        println!("wallet sync, sandbox in its own process on loopback, release build");
    }
    common::for_each_size("100000,1000000", run_one);
}

fn run_one(agents: usize) {
    let agents_arg = agents.to_string();
    let (mut sandbox, _out, url) = common::spawn_sandbox(&["--agents", &agents_arg]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client =
            SeedClient::new(ClientConfig::new(url.clone(), default_key()), url, Repeat::KeyedPosts).expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(dir.path()).expect("warehouse");
        let commit = CommitInfo { run_id: "bench".into(), step: "sync.wallets" };
        let t = Instant::now();
        let full = sync_table::<Wallet>(&client, &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.expect("sync");
        let full_secs = t.elapsed().as_secs_f64();
        let rss_full = common::peak_rss_mib().unwrap_or(0.0);

        // 1% of wallets change at the provider.
        let changed = (agents / 100).max(1);
        let t = Instant::now();
        let sends = (0..changed).map(|i| {
            let c = client.clone();
            async move {
                let req = PayoutRequest {
                    agent_id: format!("agent-{:06}", 1 + (i * 97) % agents),
                    amount_usd: Usd::from_cents(101).expect("cents"),
                    reason: "bench change".into(),
                };
                c.payout(&req, None).await.expect("payout");
            }
        });
        futures::future::join_all(sends).await;
        let change_secs = t.elapsed().as_secs_f64();
        // The default 5-minute overlap would re-read every wallet the sandbox seeded seconds ago; a real
        // account's wallets do not all change within five minutes, so measure with the overlap at zero.
        let opts = SyncOptions { overlap: std::time::Duration::ZERO, ..SyncOptions::default() };
        let t = Instant::now();
        let incr = sync_table::<Wallet>(&client, &wh, &commit, &opts, &Progress::hidden()).await.expect("sync");
        let incr_secs = t.elapsed().as_secs_f64();
        println!("  {} wallets:", agents + 1);
        println!(
            "    full load      {full_secs:>7.2} s  {:>9.0} rows/s  ({} inserted, {} pages)  peak RSS {rss_full:.0} MiB",
            full.rows_read as f64 / full_secs,
            full.inserted,
            full.pages
        );
        println!(
            "    1% changed     {incr_secs:>7.2} s  = {:.1}% of the full load  (read {}, updated {}, unchanged {}; {changed} payouts sent in {change_secs:.1} s)",
            100.0 * incr_secs / full_secs,
            incr.rows_read,
            incr.updated,
            incr.unchanged
        );
        let rss_both = common::peak_rss_mib().unwrap_or(0.0);
        println!("    peak RSS after both: {rss_both:.0} MiB");
        common::record(
            "wallet_sync",
            full.rows_read,
            &[
                ("full_secs", full_secs),
                ("full_rows_per_sec", full.rows_read as f64 / full_secs),
                ("rss_full_mib", rss_full),
                ("incr_secs", incr_secs),
                ("incr_share", incr_secs / full_secs),
                ("incr_updated", incr.updated as f64),
                ("rss_both_mib", rss_both),
            ],
        );
    });
    let _ = sandbox.kill();
    let _ = sandbox.wait();
}
