//! Reconcile at scale: N completed payouts in the log against N provider transactions (plus the intents),
//! written straight into Delta tables, then `reconcile` timed. Peak RSS is this process's.
//!
//! `cargo bench --bench reconcile` (PFSYNC_BENCH_OPS, default 1000000).

mod common;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use pfsync::reconcile::{ReconcileOptions, reconcile};
use pfsync::tables::{CommitInfo, PAYOUT_LOG, TRANSACTIONS, Warehouse, open_or_create};

const CHUNK: usize = 250_000;

fn text(v: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn cents(v: impl Iterator<Item = Option<i128>>) -> ArrayRef {
    Arc::new(v.collect::<Decimal128Array>().with_precision_and_scale(18, 2).expect("decimal"))
}

fn main() {
    let n = common::env_or("PFSYNC_BENCH_OPS", 1_000_000usize);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(dir.path()).expect("warehouse");
        let commit = CommitInfo { run_id: "bench".into(), step: "bench" };
        let now = chrono::Utc::now();
        let us = now.timestamp_micros();
        let day = now.timestamp().div_euclid(86_400) as i32;
        let t = Instant::now();
        let mut txs = open_or_create(&wh, &TRANSACTIONS, &commit).await.expect("table");
        let mut log = open_or_create(&wh, &PAYOUT_LOG, &commit).await.expect("table");
        for start in (0..n).step_by(CHUNK) {
            let ids: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
            let m = ids.len();
            let key = |i: usize| Some(format!("pfsync:default:payout:op-{i:08}"));
            let agent = |i: usize| Some(format!("agent-{:06}", 1 + i % 100_000));
            let amount = |i: usize| Some(100 + (i % 5000) as i128);
            let tx_cols: Vec<ArrayRef> = vec![
                text(ids.iter().map(|i| Some(format!("tx_{i:012}")))),
                text(ids.iter().map(|_| Some("payout".to_string()))),
                text(ids.iter().map(|&i| agent(i))),
                text(ids.iter().map(|_| None)),
                cents(ids.iter().map(|&i| amount(i))),
                text(ids.iter().map(|&i| key(i))),
                text(ids.iter().map(|&i| Some(format!("task {i}")))),
                Arc::new(TimestampMicrosecondArray::from(vec![us; m]).with_timezone("UTC")),
                Arc::new(Date32Array::from(vec![day; m])),
                Arc::new(TimestampMicrosecondArray::from(vec![us; m]).with_timezone("UTC")),
            ];
            txs = txs
                .write(vec![RecordBatch::try_new(TRANSACTIONS.arrow_schema(), tx_cols).expect("batch")])
                .await
                .expect("write");
            for event in ["intent", "completed"] {
                let log_cols: Vec<ArrayRef> = vec![
                    text(ids.iter().map(|i| Some(format!("op-{i:08}")))),
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
                    Arc::new(TimestampMicrosecondArray::from(vec![us; m]).with_timezone("UTC")),
                    Arc::new(Date32Array::from(vec![day; m])),
                ];
                log = log
                    .write(vec![RecordBatch::try_new(PAYOUT_LOG.arrow_schema(), log_cols).expect("batch")])
                    .await
                    .expect("write");
            }
        }
        println!(
            "reconcile: {n} completed payouts in the log ({} events) vs {n} provider transactions (written in {:.1} s)",
            2 * n,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let r =
            reconcile(&wh, &CommitInfo { run_id: "bench-1".into(), step: "reconcile" }, &ReconcileOptions::default())
                .await
                .expect("reconcile");
        println!(
            "  reconcile {:.2} s: {} operations, matched {}, open findings {}; peak RSS {:.0} MiB",
            t.elapsed().as_secs_f64(),
            r.operations,
            r.counts.get("matched").copied().unwrap_or(0),
            r.open().count(),
            common::peak_rss_mib().unwrap_or(0.0)
        );
    });
}
