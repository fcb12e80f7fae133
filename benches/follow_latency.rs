//! Follow mode's latency: `pfsync run --follow` (the release binary) watches a change feed, an events table
//! with CDF that this bench appends to one commit per event, at a steady rate; each event is a payout at
//! `pfsync sandbox` (its own process on loopback). The figure is, per event, the time from its events-table
//! commit (when the write returned) to its payout's `completed` row being visible in the payout log (polled
//! every 20 ms), reported as p50, p99 and max. The poll interval of follow mode (`--interval`, 1 s here)
//! bounds it from below: an event waits on average half an interval before a pass reads it.
//!
//! `cargo bench --bench follow_latency` (PFSYNC_BENCH_SIZES=30,300 events by default; PFSYNC_BENCH_RATE
//! events per second, default 5; PFSYNC_BENCH_INTERVAL seconds, default 1).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::{DataType as DeltaType, StructField};
use pfsync::payouts::state::Event;
use pfsync::tables::{PAYOUT_LOG, Warehouse, open_existing};

fn main() {
    common::for_each_size("30,300", run_one);
}

const QUERY: &str = "SELECT concat('ev-', event_id) AS payout_id, agent_id, amount AS amount_usd, \
                     concat('event ', event_id) AS reason FROM changes WHERE _change_type = 'insert'";

fn run_one(events: usize) {
    let rate: f64 = common::env_or("PFSYNC_BENCH_RATE", 5.0);
    let interval: u64 = common::env_or("PFSYNC_BENCH_INTERVAL", 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (mut sandbox, _out, url) = common::spawn_sandbox(&["--agents", "200"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let wh_dir = dir.path().join("wh");
    let events_dir = dir.path().join("events");
    std::fs::create_dir_all(&events_dir).expect("events dir");
    let cfg = dir.path().join("pfsync.toml");
    std::fs::write(
        &cfg,
        format!("[[feeds]]\nname = \"bench\"\ntable = {:?}\nquery = {QUERY:?}\n", events_dir.display().to_string()),
    )
    .expect("config");

    let mut table = rt.block_on(async {
        let loc = url::Url::from_directory_path(&events_dir).expect("url");
        deltalake::operations::create::CreateBuilder::new()
            .with_location(loc.as_str())
            .with_columns(
                ["event_id", "agent_id", "amount"].map(|n| StructField::new(n.to_string(), DeltaType::STRING, true)),
            )
            .with_configuration_property(deltalake::TableProperty::EnableChangeDataFeed, Some("true"))
            .await
            .expect("events table")
    });
    let url_s = url.to_string();
    let init = Command::new(env!("CARGO_BIN_EXE_pfsync")).arg("--warehouse").arg(&wh_dir).arg("init").output();
    assert!(init.is_ok_and(|o| o.status.success()), "pfsync init");
    let mut follower = Command::new(env!("CARGO_BIN_EXE_pfsync"))
        .args(["--api-url", &url_s, "--faucet-url", &url_s, "-q", "--config"])
        .arg(&cfg)
        .arg("--warehouse")
        .arg(&wh_dir)
        .args(["run", "--steps", "payouts", "--follow", "--interval", &interval.to_string()])
        .env("PURPLEFLEA_API_KEY", "pf_test_sandbox")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pfsync run --follow");

    let schema =
        Arc::new(Schema::new(["event_id", "agent_id", "amount"].map(|n| Field::new(n, DataType::Utf8, true)).to_vec()));
    let wh = Warehouse::local(&wh_dir).expect("warehouse");
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let mut logged: HashMap<String, Instant> = HashMap::new();
    let ids: Vec<String> = (0..events).map(|i| format!("ev-{i:06}")).collect();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut next = 0usize;
    let mut log = None;
    while logged.len() < events {
        assert!(
            start.elapsed() < Duration::from_secs(120 + (events as f64 / rate) as u64),
            "only {} logged",
            logged.len()
        );
        // Append the events that are due, one commit each.
        while next < events && start.elapsed() >= gap.mul_f64(next as f64) {
            let cell = |v: String| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    cell(format!("{next:06}")),
                    cell(format!("agent-{:06}", next % 200 + 1)),
                    cell(format!("0.{:02}", next % 99 + 1)),
                ],
            )
            .expect("batch");
            table = rt.block_on(async { table.write(vec![batch]).await }).expect("append event");
            committed.insert(ids[next].clone(), Instant::now());
            next += 1;
        }
        // What the follower logged so far.
        rt.block_on(async {
            if log.is_none() {
                log = open_existing(&wh, &PAYOUT_LOG).await.ok().flatten();
            }
            let Some(t) = log.as_mut() else { return };
            if t.update_state().await.is_err() {
                return;
            }
            let waiting: Vec<String> = ids[..next].iter().filter(|id| !logged.contains_key(*id)).cloned().collect();
            if let Ok(h) = pfsync::payouts::log::history(t, &waiting).await {
                let now = Instant::now();
                for (id, evs) in h {
                    if evs.iter().any(|e| e.event == Event::Completed) {
                        logged.entry(id).or_insert(now);
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = Command::new("kill").args(["-TERM", &follower.id().to_string()]).status();
    let status = follower.wait().expect("follower");
    assert_eq!(status.code(), Some(0), "SIGTERM ends follow mode with 0");

    // Each event paid once: one completed row per id in the log.
    let completed = rt.block_on(async {
        let t = open_existing(&wh, &PAYOUT_LOG).await.expect("log").expect("log exists");
        let h = pfsync::payouts::log::history(&t, &ids).await.expect("history");
        h.values().map(|evs| evs.iter().filter(|e| e.event == Event::Completed).count()).collect::<Vec<_>>()
    });
    assert_eq!(completed.len(), events, "every event has a log entry");
    assert!(completed.iter().all(|&c| c == 1), "each event completed once");
    let _ = sandbox.kill();

    let mut lat: Vec<f64> = ids.iter().map(|id| (logged[id] - committed[id]).as_secs_f64() * 1000.0).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    let (p50, p99, max) = (pct(0.50), pct(0.99), lat[lat.len() - 1]);
    println!(
        "follow_latency: {events} events at {rate}/s, --interval {interval}: commit -> logged outcome p50 {p50:.0} ms, \
         p99 {p99:.0} ms, max {max:.0} ms ({elapsed:.1} s)"
    );
    common::record(
        "follow_latency",
        events as u64,
        &[
            ("p50_ms", p50),
            ("p99_ms", p99),
            ("max_ms", max),
            ("rate", rate),
            ("interval_s", interval as f64),
            ("secs", elapsed),
        ],
    );
}
