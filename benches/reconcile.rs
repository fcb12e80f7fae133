//! Reconcile at scale: a year of history (N completed payouts, an intent and a completed event each, over 365
//! daily partitions, one log commit and one transactions commit a day) against N matching provider
//! transactions, written straight into Delta tables. Then a full rebuild (`--full`), then 1% more operations
//! (one day's commit, as an hourly run leaves them), then a run that reads what changed. Each phase runs in
//! a process of its own, so each peak RSS is that phase's alone; the machine's load average is recorded with
//! every phase (the machine may be shared).
//!
//! `cargo bench --bench reconcile` (PFSYNC_BENCH_SIZES=1000000,3000000,10000000 by default, each in its own
//! child process; PFSYNC_BENCH_MEMORY_MIB sets the rebuild's memory limit, pfsync's default if unset).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use chrono::{DateTime, Duration, Utc};
use deltalake::DeltaTable;
use pfsync::reconcile::{ReconcileOptions, reconcile_at};
use pfsync::tables::{CommitInfo, PAYOUT_LOG, TRANSACTIONS, Warehouse, open_or_create};

const DAYS: usize = 365;

fn text(v: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn cents(v: impl Iterator<Item = Option<i128>>) -> ArrayRef {
    Arc::new(v.collect::<Decimal128Array>().with_precision_and_scale(18, 2).expect("decimal"))
}

fn main() {
    if let Ok(phase) = std::env::var("PFSYNC_BENCH_PHASE") {
        let n: usize = std::env::var("PFSYNC_BENCH_ONE").expect("size").parse().expect("size");
        let dir = std::env::var("PFSYNC_BENCH_DIR").expect("dir");
        phase_main(&phase, n, Path::new(&dir));
        return;
    }
    common::for_each_size("1000000,3000000,10000000", run_one);
}

/// The 1- , 5- and 15-minute load averages of the machine.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn load1() -> f64 {
    load().split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN)
}

/// Append operations `ids`, recorded evenly over `spread_secs` from `at`, to the log (intent, then completed
/// a second later) and the provider's ledger: one commit to each table.
async fn append_ops(
    log: DeltaTable,
    txs: DeltaTable,
    ids: std::ops::Range<usize>,
    at: DateTime<Utc>,
    spread_secs: i64,
) -> (DeltaTable, DeltaTable) {
    let m = ids.len();
    let ids: Vec<usize> = ids.collect();
    let offset = |k: usize, extra: i64| {
        (at + Duration::seconds((k as i64 * spread_secs) / m.max(1) as i64 + extra)).timestamp_micros()
    };
    let day_of = |us: i64| us.div_euclid(86_400_000_000) as i32;
    let key = |i: usize| Some(format!("pfsync:default:payout:op-{i:09}"));
    let agent = |i: usize| Some(format!("agent-{:06}", 1 + i % 100_000));
    let amount = |i: usize| Some(100 + (i % 5000) as i128);
    let created: Vec<i64> = (0..m).map(|k| offset(k, 1)).collect();
    let tx_cols: Vec<ArrayRef> = vec![
        text(ids.iter().map(|i| Some(format!("tx_{i:012}")))),
        text(ids.iter().map(|_| Some("payout".to_string()))),
        text(ids.iter().map(|&i| agent(i))),
        text(ids.iter().map(|_| None)),
        cents(ids.iter().map(|&i| amount(i))),
        text(ids.iter().map(|&i| key(i))),
        text(ids.iter().map(|&i| Some(format!("task {i}")))),
        Arc::new(TimestampMicrosecondArray::from(created.clone()).with_timezone("UTC")),
        Arc::new(Date32Array::from(created.iter().map(|&us| day_of(us)).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
    ];
    let txs = txs
        .write(vec![RecordBatch::try_new(TRANSACTIONS.arrow_schema(), tx_cols).expect("batch")])
        .await
        .expect("write");
    let mut batches = Vec::new();
    for (event, extra) in [("intent", 0), ("completed", 1)] {
        let at: Vec<i64> = (0..m).map(|k| offset(k, extra)).collect();
        let log_cols: Vec<ArrayRef> = vec![
            text(ids.iter().map(|i| Some(format!("op-{i:09}")))),
            text(ids.iter().map(|_| Some("payout".to_string()))),
            text(ids.iter().map(|_| Some(event.to_string()))),
            Arc::new(Int32Array::from(vec![1; m])),
            text(ids.iter().map(|&i| agent(i))),
            text(ids.iter().map(|_| None)),
            cents(ids.iter().map(|&i| amount(i))),
            text(ids.iter().map(|&i| Some(format!("task {i}")))),
            text(ids.iter().map(|&i| key(i))),
            text(ids.iter().map(|&i| (event == "completed").then(|| format!("tx_{i:012}")))),
            text(ids.iter().map(|_| None)),
            Arc::new(Int32Array::from(vec![Some(200); m])),
            text(ids.iter().map(|_| None)),
            text(ids.iter().map(|_| None)),
            text(ids.iter().map(|_| Some("bench".to_string()))),
            Arc::new(TimestampMicrosecondArray::from(at.clone()).with_timezone("UTC")),
            Arc::new(Date32Array::from(at.iter().map(|&us| day_of(us)).collect::<Vec<_>>())),
            // payer_agent_id, decided_by, note, escrow_tag
            text(ids.iter().map(|_| None)),
            text(ids.iter().map(|_| None)),
            text(ids.iter().map(|_| None)),
            text(ids.iter().map(|_| None)),
        ];
        batches.push(RecordBatch::try_new(PAYOUT_LOG.arrow_schema(), log_cols).expect("batch"));
    }
    let log = log.write(batches).await.expect("write");
    (log, txs)
}

/// The start of the day `days_ago` days before `now`'s day, UTC.
fn day_start(now: DateTime<Utc>, days_ago: i64) -> DateTime<Utc> {
    let d = now.date_naive() - Duration::days(days_ago);
    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// The history's clock: the last of the 365 days is today, and reconcile runs just after it.
fn now() -> DateTime<Utc> {
    Utc::now()
}

fn phase_main(phase: &str, n: usize, dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let wh = Warehouse::local(dir).expect("warehouse");
        let setup = CommitInfo { run_id: "bench".into(), step: "bench" };
        let memory_mib: usize =
            common::env_or("PFSYNC_BENCH_MEMORY_MIB", pfsync::reconcile::limits::DEFAULT_MEMORY_LIMIT_MIB as usize);
        let load_before = load1();
        let t = Instant::now();
        let figures: Vec<(&str, f64)> = match phase {
            "generate" => {
                let mut log = open_or_create(&wh, &PAYOUT_LOG, &setup).await.expect("table");
                let mut txs = open_or_create(&wh, &TRANSACTIONS, &setup).await.expect("table");
                let today = now();
                for d in 0..DAYS {
                    let (lo, hi) = (n * d / DAYS, n * (d + 1) / DAYS);
                    // A day's operations, never past its end (the partition is the day of recorded_at).
                    let start = day_start(today, (DAYS - 1 - d) as i64);
                    (log, txs) = append_ops(log, txs, lo..hi, start, 86_000).await;
                }
                vec![]
            }
            "more" => {
                let log = open_or_create(&wh, &PAYOUT_LOG, &setup).await.expect("table");
                let txs = open_or_create(&wh, &TRANSACTIONS, &setup).await.expect("table");
                let more = (n / 100).max(1);
                // Recorded within the last hour: a run's worth of new operations.
                append_ops(log, txs, n..n + more, now() - Duration::hours(1), 3_000).await;
                vec![]
            }
            "full" | "rerun" => {
                let opts = ReconcileOptions {
                    full: phase == "full",
                    memory_limit: memory_mib * 1024 * 1024,
                    // How many passes a rebuild makes (`--rebuild-passes`); unset: as many as pfsync picks.
                    passes: std::env::var("PFSYNC_BENCH_PASSES").ok().and_then(|p| p.parse().ok()),
                    ..ReconcileOptions::default()
                };
                let commit = CommitInfo { run_id: format!("bench-{phase}"), step: "reconcile" };
                let r = reconcile_at(&wh, &commit, &opts, now() + Duration::minutes(1)).await.expect("reconcile");
                assert_eq!(
                    r.open().count(),
                    0,
                    "the bench data reconciles cleanly: {}",
                    pfsync::reconcile::report::text(&r)
                );
                assert_eq!(r.rebuilt.is_some(), phase == "full", "{}", pfsync::reconcile::report::text(&r));
                print!("{}", pfsync::reconcile::report::text(&r));
                vec![("operations", r.operations as f64), ("classified", r.classified as f64)]
            }
            other => panic!("unknown phase {other}"),
        };
        let secs = t.elapsed().as_secs_f64();
        let rss = common::peak_rss_mib().unwrap_or(f64::NAN);
        let mut line = format!("{phase} {secs} {rss} {load_before} {}", load1());
        for (k, v) in figures {
            line.push_str(&format!(" {k}={v}"));
        }
        // The parent reads the last line.
        println!("\nPHASE {line}");
    });
}

/// One phase in a fresh process: (seconds, peak RSS MiB, load before, load after, named figures).
fn phase(name: &str, n: usize, dir: &Path) -> (f64, f64, f64, f64, Vec<(String, f64)>) {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("PFSYNC_BENCH_PHASE", name)
        .env("PFSYNC_BENCH_ONE", n.to_string())
        .env("PFSYNC_BENCH_DIR", dir)
        .output()
        .expect("phase");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "phase {name} at {n}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("PHASE ")).expect("phase line");
    let parts: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| parts.get(i).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
    let named = parts[5..]
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN))))
        .collect();
    for l in stdout.lines().filter(|l| !l.starts_with("PHASE ") && !l.is_empty()) {
        println!("    {l}");
    }
    (num(1), num(2), num(3), num(4), named)
}

fn du_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => walk(&e.path()),
                        _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir) as f64 / 1024.0 / 1024.0
}

fn run_one(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory_mib: usize =
        common::env_or("PFSYNC_BENCH_MEMORY_MIB", pfsync::reconcile::limits::DEFAULT_MEMORY_LIMIT_MIB as usize);
    // The passes the full phase makes: as it is told, else as pfsync picks them for the log's 2N events.
    let rebuild_passes: u32 = std::env::var("PFSYNC_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| pfsync::reconcile::passes::count(2 * n as u64, memory_mib * 1024 * 1024));
    let get = |v: &[(String, f64)], k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| *x).unwrap_or(f64::NAN);
    let (gen_secs, _, gen_load, _, _) = phase("generate", n, dir.path());
    println!(
        "reconcile: {n} completed payouts ({} log events) over {DAYS} days vs {n} provider transactions, written in {gen_secs:.0} s ({:.0} MiB on disk)",
        2 * n,
        du_mib(dir.path())
    );
    let (full_secs, full_rss, full_load0, full_load1, f) = phase("full", n, dir.path());
    println!(
        "  full rebuild {full_secs:.1} s, peak RSS {full_rss:.0} MiB: {} operations classified (load {full_load0:.1} -> {full_load1:.1})",
        get(&f, "classified")
    );
    let more = (n / 100).max(1);
    phase("more", n, dir.path());
    let (rerun_secs, rerun_rss, rerun_load0, rerun_load1, r) = phase("rerun", n, dir.path());
    println!(
        "  rerun after {more} more operations: {rerun_secs:.2} s = {:.1}% of the rebuild, peak RSS {rerun_rss:.0} MiB, {} operations classified of {} (load {rerun_load0:.1} -> {rerun_load1:.1})",
        100.0 * rerun_secs / full_secs,
        get(&r, "classified"),
        get(&r, "operations")
    );
    common::record(
        "reconcile",
        n as u64,
        &[
            ("generate_secs", gen_secs),
            ("generate_load", gen_load),
            ("secs", full_secs),
            ("ops_per_sec", n as f64 / full_secs),
            ("rss_mib", full_rss),
            ("full_load_before", full_load0),
            ("full_load_after", full_load1),
            ("rerun_new_ops", more as f64),
            ("rerun_secs", rerun_secs),
            ("rerun_share", rerun_secs / full_secs),
            ("rerun_classified", get(&r, "classified")),
            ("rerun_operations", get(&r, "operations")),
            ("rerun_rss_mib", rerun_rss),
            ("rerun_load_before", rerun_load0),
            ("rerun_load_after", rerun_load1),
            ("disk_mib", du_mib(dir.path())),
            ("memory_limit_mib", memory_mib as f64),
            ("rebuild_passes", rebuild_passes as f64),
        ],
    );
}
