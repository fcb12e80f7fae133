//! Payouts against Purple Flea's own services: the test bed (`../shared/purpleflea-live/start.sh`, their
//! casino on Node.js and SQLite) on loopback, N pending payouts from one funded payer agent to 50 payees,
//! `[provider] kind = "live"`: no idempotency keys, each batch at most 20 debits of one payer, never two of
//! one amount. Reports completed payouts/s and peak RSS (the services are other processes).
//!
//! `cargo bench --bench live_payouts` (PFSYNC_BENCH_SIZES=200,2000 by default). Needs node 20+, npm, g++
//! and python3 for the test bed; its first start installs the services' npm dependencies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use pfsync::http::ClientConfig;
use pfsync::payouts::{PayoutOptions, run_payouts};
use pfsync::progress::Progress;
use pfsync::provider::Common;
use pfsync::provider::ProviderSettings;
use pfsync::secret::ApiKey;
use pfsync::tables::{CommitInfo, PENDING_PAYOUTS, Warehouse, open_or_create};

fn main() {
    common::for_each_size("200,2000", run_one);
}

fn scripts() -> PathBuf {
    std::env::var_os("PFSYNC_LIVE_BED_SCRIPT")
        .map(|s| PathBuf::from(s).parent().map(Path::to_path_buf).unwrap_or_default())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/purpleflea-live"))
}

fn script(dir: &Path, name: &str, args: &[&str]) -> String {
    let out = Command::new(scripts().join(name)).arg(dir).args(args).output().expect(name);
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_one(n: usize) {
    let bed = tempfile::tempdir().expect("tempdir");
    let dir = bed.path();
    script(dir, "start.sh", &[]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f).trim().to_string();
    let (casino, escrow) = (read("casino.url"), read("escrow.url"));
    let agents: Vec<serde_json::Value> =
        script(dir, "agents.py", &["51"]).lines().map(|l| serde_json::from_str(l).expect("agent")).collect();
    let payer = &agents[0];
    script(dir, "fund.py", &[payer["agent_id"].as_str().unwrap(), &(n * 10).to_string()]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let figures = rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(tmp.path()).expect("warehouse");
        let commit = CommitInfo { run_id: "bench".into(), step: "payouts" };
        let payees: Vec<String> = agents[1..].iter().map(|a| a["agent_id"].as_str().unwrap().to_string()).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("bench-{i:06}")))),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| payees[i % payees.len()].clone()))),
            Arc::new(
                (0..n)
                    .map(|i| Some(100 + (i % 700) as i128))
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
        let key = ApiKey::new(payer["api_key"].as_str().unwrap(), "bench").expect("key");
        let url = |s: &str| url::Url::parse(s).expect("url");
        let mut section = toml::Table::new();
        section.insert("kind".into(), "live".into());
        section.insert("casino_url".into(), casino.clone().into());
        section.insert("escrow_url".into(), escrow.clone().into());
        let settings = ProviderSettings::from_table(section).expect("settings");
        let common = Common { client: ClientConfig::new(url(&casino), key), faucet_url: url(&casino) };
        let provider = pfsync::provider::connect(&settings, &common).await.expect("keys");
        let provider = provider.as_ref();
        let opts = PayoutOptions { concurrency: 16, batch_size: 2000, check_agents: false, ..PayoutOptions::default() };
        let t = Instant::now();
        let r = run_payouts(provider, &wh, &commit, &opts, &Progress::hidden()).await.expect("payouts");
        let secs = t.elapsed().as_secs_f64();
        println!("live_payouts: {n} pending, Purple Flea's casino on loopback (test bed), one payer, 50 payees");
        println!(
            "  completed {} in {secs:.1} s = {:.0} payouts/s; unknown {}; log commits {}",
            r.completed,
            r.completed as f64 / secs,
            r.unknown,
            r.log_commits
        );
        let rss = common::peak_rss_mib().unwrap_or(0.0);
        println!("  peak RSS {rss:.0} MiB (pfsync only; the services are other processes)");
        vec![
            ("secs", secs),
            ("completed", r.completed as f64),
            ("payouts_per_sec", r.completed as f64 / secs),
            ("unknown", r.unknown as f64),
            ("log_commits", r.log_commits as f64),
            ("rss_mib", rss),
        ]
    });
    let _ = Command::new("sh").arg("-c").arg(format!("kill $(cat {}/pids)", dir.display())).status();
    common::record("live_payouts", n as u64, &figures);
}
