//! Payouts throughput: N pending payouts against a sandbox in its own process with 20 ms injected latency
//! on every request and a 2,000 requests/s limit (429 beyond it), pfsync's client limited to 1,900/s.
//! Reports completed payouts/s, 429s seen, log commits per 1,000 payouts and peak RSS.
//!
//! `cargo bench --bench payouts` (PFSYNC_BENCH_SIZES=10000,100000 by default: the payouts issue's 100k and a
//! tenth of it, each in its own child process).

mod common;

use std::io::BufRead;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use pfsync::http::{ClientConfig, Repeat};
use pfsync::payouts::{PayoutOptions, run_payouts};
use pfsync::progress::Progress;
use pfsync::provider::seed::{SeedClient, SeedProvider};
use pfsync::sandbox::default_key;
use pfsync::tables::{CommitInfo, PENDING_PAYOUTS, Warehouse, open_or_create};

fn main() {
    common::for_each_size("10000,100000", run_one);
}

fn run_one(n: usize) {
    let agents = 10_000usize;
    let agents_arg = agents.to_string();
    let (mut sandbox, mut sandbox_out, url) =
        common::spawn_sandbox(&["--agents", &agents_arg, "--fault-latency", "1", "--fault-max-rps", "2000"]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let figures = rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(dir.path()).expect("warehouse");
        let commit = CommitInfo { run_id: "bench".into(), step: "payouts" };
        let ids: Vec<String> = (0..n).map(|i| format!("bench-{i:07}")).collect();
        let agents_col: Vec<String> = (0..n).map(|i| format!("agent-{:06}", 1 + i % agents)).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(ids.iter())),
            Arc::new(StringArray::from_iter_values(agents_col.iter())),
            Arc::new(
                (0..n)
                    .map(|i| Some(100 + (i % 900) as i128))
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(18, 2)
                    .expect("decimal"),
            ),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("bench task {i}")))),
            Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "bench"))),
        ];
        let batch = RecordBatch::try_new(PENDING_PAYOUTS.arrow_schema(), columns).expect("batch");
        open_or_create(&wh, &PENDING_PAYOUTS, &commit).await.expect("table").write(vec![batch]).await.expect("write");

        let mut cfg = ClientConfig::new(url.clone(), default_key());
        cfg.rate_limit_rps = Some(1900.0);
        cfg.max_concurrency = 128;
        let client = SeedClient::new(cfg, url.clone(), Repeat::KeyedPosts).expect("client");
        let opts =
            PayoutOptions { concurrency: 128, batch_size: 5000, check_agents: false, ..PayoutOptions::default() };
        let t = Instant::now();
        let r = run_payouts(&SeedProvider::new(client.clone(), true), &wh, &commit, &opts, &Progress::hidden())
            .await
            .expect("payouts");
        let secs = t.elapsed().as_secs_f64();
        println!("payouts: {n} pending, sandbox in its own process: 20 ms latency on every request, 2,000 req/s limit");
        println!(
            "  completed {} in {secs:.1} s = {:.0} payouts/s; unknown {}; log commits {} ({:.2} per 1,000 payouts)",
            r.completed,
            r.completed as f64 / secs,
            r.unknown,
            r.log_commits,
            r.log_commits as f64 * 1000.0 / r.completed.max(1) as f64
        );
        let rss = common::peak_rss_mib().unwrap_or(0.0);
        println!("  peak RSS {rss:.0} MiB (pfsync only; the sandbox is another process)");
        vec![
            ("secs", secs),
            ("completed", r.completed as f64),
            ("payouts_per_sec", r.completed as f64 / secs),
            ("unknown", r.unknown as f64),
            ("commits_per_1000", r.log_commits as f64 * 1000.0 / r.completed.max(1) as f64),
            ("rss_mib", rss),
        ]
    });
    // Stop the sandbox with SIGINT so it prints its request and fault (429) counts.
    let _ = Command::new("kill").args(["-INT", &sandbox.id().to_string()]).status();
    let mut rest = String::new();
    while sandbox_out.read_line(&mut rest).unwrap_or(0) > 0 {}
    let _ = sandbox.wait();
    print!("  sandbox: {rest}");
    // "... after N requests (M faults injected)": with only latency and the rate limit configured, every
    // injected fault is a 429.
    let throttled = rest
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let mut figures = figures;
    figures.push(("http_429", throttled));
    common::record("payouts", n as u64, &figures);
}
