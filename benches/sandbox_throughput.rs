//! Requests per second the sandbox sustains on this machine, with no injected latency. The load generator
//! (reqwest, keep-alive connections) runs in the same process and on the same 2 cores, so the figure is
//! a floor for the server alone.
//!
//! `cargo bench --bench sandbox_throughput` (PFSYNC_BENCH_SECS, PFSYNC_BENCH_CONNS to change the run).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pfsync::sandbox::{Sandbox, SandboxConfig};

#[derive(Clone, Copy)]
enum Mix {
    /// GET /wallet/{id}
    Reads,
    /// POST /wallet/payout with a fresh Idempotency-Key each time (every request moves money)
    KeyedPayouts,
    /// GET /wallets?limit=100 pages
    Pages,
}

async fn run(sb: &Sandbox, mix: Mix, secs: u64, conns: usize) -> (u64, u64, Duration) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(conns).build().expect("client");
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let base = sb.base_url().to_string();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for conn in 0..conns {
        let (http, ok, bad, base) = (http.clone(), ok.clone(), bad.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let agent = format!("agent-{:06}", 1 + (i as usize * 7 + conn) % 1000);
                let req = match mix {
                    Mix::Reads => http.get(format!("{base}/wallet/{agent}")),
                    Mix::Pages => http.get(format!("{base}/wallets?limit=100")),
                    Mix::KeyedPayouts => http
                        .post(format!("{base}/wallet/payout"))
                        .header("Idempotency-Key", format!("bench-{conn}-{i}"))
                        .header("content-type", "application/json")
                        .body(format!(r#"{{"agent_id":"{agent}","amount_usd":0.01,"reason":"bench"}}"#)),
                };
                let done = match req.bearer_auth("pf_test_sandbox").send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if done {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    bad.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed), start.elapsed())
}

fn main() {
    let secs = common::env_or("PFSYNC_BENCH_SECS", 5u64);
    let conns = common::env_or("PFSYNC_BENCH_CONNS", 32usize);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let sb = Sandbox::start(SandboxConfig::for_tests(1000)).await.expect("sandbox");
        println!("sandbox throughput: {} cores, {conns} keep-alive connections, {secs} s per mix", num_cpus());
        let mut figures = Vec::new();
        for (name, key, mix) in [
            ("GET /wallet/{id}", "wallet_get_rps", Mix::Reads),
            ("POST /wallet/payout (new key each)", "keyed_payout_rps", Mix::KeyedPayouts),
            ("GET /wallets?limit=100", "wallet_page_rps", Mix::Pages),
        ] {
            let (ok, bad, elapsed) = run(&sb, mix, secs, conns).await;
            let rps = ok as f64 / elapsed.as_secs_f64();
            println!("  {name:<38} {rps:>9.0} req/s  ({ok} ok, {bad} failed, {:.1} s)", elapsed.as_secs_f64());
            figures.push((key, rps));
        }
        let rss = common::peak_rss_mib().unwrap_or(0.0);
        println!("  peak RSS {rss:.0} MiB");
        figures.extend([("rss_mib", rss), ("connections", conns as f64), ("secs_per_mix", secs as f64)]);
        common::record("sandbox_throughput", 0, &figures);
    });
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
