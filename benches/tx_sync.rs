//! The transaction ledger appended incrementally: N transactions arrive at the provider in 10 rounds, each
//! followed by an incremental `sync transactions`; then `maintain` compacts the table. Reports each round's
//! sync time and rate, the data files before and after maintain, the time maintain took and a full count
//! (the table stays readable). The sandbox runs in its own process, so the peak RSS is pfsync's alone.
//!
//! `cargo bench --bench tx_sync` (PFSYNC_BENCH_SIZES=100000,1000000 by default: the sync issue's 1M and a
//! tenth of it, each in its own child process).

mod common;

use std::time::Instant;

use futures::StreamExt;
use pfsync::http::{ClientConfig, Repeat};
use pfsync::maintain::{MaintainOptions, maintain_all};
use pfsync::money::Usd;
use pfsync::progress::Progress;
use pfsync::provider::records::Transaction;
use pfsync::provider::seed::SeedClient;
use pfsync::provider::seed::wire::PayoutRequest;
use pfsync::sandbox::default_key;
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{CommitInfo, TRANSACTIONS, Warehouse, open_existing, sql_context};

const ROUNDS: usize = 10;
const AGENTS: usize = 1000;

fn main() {
    common::for_each_size("100000,1000000", run_one);
}

fn run_one(n: usize) {
    let (mut sandbox, _out, url) = common::spawn_sandbox(&["--agents", &AGENTS.to_string()]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut cfg = ClientConfig::new(url.clone(), default_key());
        cfg.max_concurrency = 64;
        let client = SeedClient::new(cfg, url, Repeat::KeyedPosts).expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(dir.path()).expect("warehouse");
        let commit = CommitInfo { run_id: "bench".into(), step: "sync.transactions" };
        // The opening transactions of the seeded agents, synced once before the measured rounds.
        sync_table::<Transaction>(&client, &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.expect("sync");

        println!("transactions: {n} appended in {ROUNDS} rounds, an incremental sync after each, then maintain");
        let per_round = n / ROUNDS;
        let (mut sync_secs, mut worst, mut synced) = (0.0f64, 0.0f64, 0u64);
        for round in 0..ROUNDS {
            // Keyless payouts: the quickest way to make the provider append rows (nothing is retried blind).
            let sends = futures::stream::iter(0..per_round).map(|i| {
                let c = client.clone();
                async move {
                    let req = PayoutRequest {
                        agent_id: format!("agent-{:06}", 1 + (round * per_round + i) % AGENTS),
                        amount_usd: Usd::from_cents(1 + (i % 500) as i64).expect("cents"),
                        reason: format!("bench round {round}"),
                    };
                    c.payout(&req, None).await.expect("payout");
                }
            });
            sends.buffer_unordered(64).collect::<Vec<()>>().await;
            // Overlap 0, as in the wallet bench: every row here is seconds old, so the default 5-minute overlap
            // would re-read all earlier rounds.
            let opts = SyncOptions { overlap: std::time::Duration::ZERO, ..SyncOptions::default() };
            let t = Instant::now();
            let r = sync_table::<Transaction>(&client, &wh, &commit, &opts, &Progress::hidden())
                .await
                .expect("sync");
            let secs = t.elapsed().as_secs_f64();
            sync_secs += secs;
            worst = worst.max(secs);
            synced += r.inserted;
            println!("  round {round}: synced {} new rows in {secs:.2} s ({:.0} rows/s)", r.inserted, r.inserted as f64 / secs);
        }
        let files = |t: &deltalake::DeltaTable| t.get_file_uris().map(|f| f.count()).unwrap_or(0);
        let before = files(&open_existing(&wh, &TRANSACTIONS).await.expect("open").expect("table"));
        let opts = MaintainOptions { retention_hours: 168, i_know: false, dry_run: false };
        let t = Instant::now();
        maintain_all(&wh, &opts, &CommitInfo { run_id: "bench".into(), step: "maintain" }).await.expect("maintain");
        let maintain_secs = t.elapsed().as_secs_f64();
        let after = files(&open_existing(&wh, &TRANSACTIONS).await.expect("open").expect("table"));
        let t = Instant::now();
        let ctx = sql_context(&wh).await.expect("sql");
        let b = ctx.sql("SELECT count(*) FROM purpleflea.ledger.transactions").await.expect("sql").collect().await;
        let count = b.expect("count")[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("count")
            .value(0);
        let count_secs = t.elapsed().as_secs_f64();
        let rss = common::peak_rss_mib().unwrap_or(0.0);
        println!(
            "  {synced} rows synced in {sync_secs:.2} s ({:.0} rows/s, slowest round {worst:.2} s); data files {before} -> {after} after maintain ({maintain_secs:.2} s); count(*) = {count} in {count_secs:.2} s; peak RSS {rss:.0} MiB",
            synced as f64 / sync_secs
        );
        assert_eq!(synced as usize, per_round * ROUNDS);
        common::record(
            "tx_sync",
            n as u64,
            &[
                ("rounds", ROUNDS as f64),
                ("sync_secs", sync_secs),
                ("rows_per_sec", synced as f64 / sync_secs),
                ("slowest_round_secs", worst),
                ("files_before", before as f64),
                ("files_after", after as f64),
                ("maintain_secs", maintain_secs),
                ("count", count as f64),
                ("count_secs", count_secs),
                ("rss_mib", rss),
            ],
        );
    });
    let _ = sandbox.kill();
    let _ = sandbox.wait();
}
