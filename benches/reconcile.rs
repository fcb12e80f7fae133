//! Reconcile at scale: N completed payouts in the log against N provider transactions (plus the intents),
//! written straight into Delta tables, then `reconcile` timed. Peak RSS is this process's.
//!
//! Then 1% more operations arrive and reconcile runs again, to show how the rerun's work grows.
//!
//! `cargo bench --bench reconcile` (PFSYNC_BENCH_SIZES=100000,1000000 by default: the reconcile issue's 1M
//! and a tenth of it, each in its own child process).

mod common;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::DeltaTable;
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
    common::for_each_size("100000,1000000", run_one);
}

/// Append operations `ids` to the log (intent and completed events) and the provider's ledger.
async fn append(log: DeltaTable, txs: DeltaTable, ids: std::ops::Range<usize>) -> (DeltaTable, DeltaTable) {
    let now = chrono::Utc::now();
    let us = now.timestamp_micros();
    let day = now.timestamp().div_euclid(86_400) as i32;
    let (mut log, mut txs) = (log, txs);
    for start in ids.clone().step_by(CHUNK) {
        let ids: Vec<usize> = (start..(start + CHUNK).min(ids.end)).collect();
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
    (log, txs)
}

fn run_one(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::local(dir.path()).expect("warehouse");
        let commit = CommitInfo { run_id: "bench".into(), step: "bench" };
        let t = Instant::now();
        let txs = open_or_create(&wh, &TRANSACTIONS, &commit).await.expect("table");
        let log = open_or_create(&wh, &PAYOUT_LOG, &commit).await.expect("table");
        let (log, txs) = append(log, txs, 0..n).await;
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
        let first_secs = t.elapsed().as_secs_f64();
        let rss_first = common::peak_rss_mib().unwrap_or(0.0);
        println!(
            "  reconcile {first_secs:.2} s: {} operations, matched {}, open findings {}; peak RSS {rss_first:.0} MiB",
            r.operations,
            r.counts.get("matched").copied().unwrap_or(0),
            r.open().count(),
        );
        assert_eq!(r.open().count(), 0, "the bench data reconciles cleanly");

        // 1% more operations arrive; reconcile again.
        let more = (n / 100).max(1);
        append(log, txs, n..n + more).await;
        let t = Instant::now();
        let r2 =
            reconcile(&wh, &CommitInfo { run_id: "bench-2".into(), step: "reconcile" }, &ReconcileOptions::default())
                .await
                .expect("reconcile");
        let rerun_secs = t.elapsed().as_secs_f64();
        println!(
            "  rerun after {more} more operations: {rerun_secs:.2} s = {:.1}% of the first run ({} operations classified)",
            100.0 * rerun_secs / first_secs,
            r2.operations
        );
        assert_eq!(r2.open().count(), 0);
        common::record(
            "reconcile",
            n as u64,
            &[
                ("secs", first_secs),
                ("ops_per_sec", r.operations as f64 / first_secs),
                ("rss_mib", rss_first),
                ("rerun_new_ops", more as f64),
                ("rerun_secs", rerun_secs),
                ("rerun_share", rerun_secs / first_secs),
                ("rerun_classified", r2.operations as f64),
                ("rss_after_rerun_mib", common::peak_rss_mib().unwrap_or(0.0)),
            ],
        );
    });
}
