//! Change-feed sources (`[[feeds]]`): events appended to a CDF-enabled Delta table in several commits are
//! paid once each, across runs, a kill after send, a delete in the events table and a re-read from the
//! start; a table without a change data feed stops the run with its message.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::DeltaTable;
use deltalake::kernel::{DataType as DeltaType, StructField};
use pfsync::sandbox::Sandbox;
use pfsync::tables::{PAYOUT_LOG, open_existing};

use crate::common::{Later, PaidBy, PfsyncCommand, assert_paid_once, output_in_place as run, sandbox, warehouse};
use crate::payouts::{payouts_cmd, wait_out_in_flight};

pub async fn events_table(path: &std::path::Path, cdf: bool) -> DeltaTable {
    std::fs::create_dir_all(path).unwrap();
    let url = url::Url::from_directory_path(path).unwrap();
    let mut b = deltalake::operations::create::CreateBuilder::new().with_location(url.as_str()).with_columns(
        ["event_id", "agent_id", "amount"].map(|n| StructField::new(n.to_string(), DeltaType::STRING, true)),
    );
    if cdf {
        b = b.with_configuration_property(deltalake::TableProperty::EnableChangeDataFeed, Some("true"));
    }
    b.await.unwrap()
}

pub async fn append(table: DeltaTable, rows: &[(&str, &str, &str)]) -> DeltaTable {
    let schema =
        Arc::new(Schema::new(["event_id", "agent_id", "amount"].map(|n| Field::new(n, DataType::Utf8, true)).to_vec()));
    let col = |i: usize| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some([r.0, r.1, r.2][i].to_string())).collect::<StringArray>())
    };
    let batch = RecordBatch::try_new(schema, vec![col(0), col(1), col(2)]).unwrap();
    table.write(vec![batch]).await.unwrap()
}

const QUERY: &str = "SELECT concat('trade-', event_id) AS payout_id, agent_id, amount AS amount_usd, \
                     concat('trade ', event_id, ' at version ', CAST(_commit_version AS STRING)) AS reason \
                     FROM changes WHERE _change_type = 'insert'";

fn config(dir: &std::path::Path, name: &str, table: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("[[feeds]]\nname = {name:?}\ntable = {:?}\nquery = {QUERY:?}\n", table.display().to_string()),
    )
    .unwrap();
    path
}

/// Each event's trade paid once at the sandbox, and no other trade.
fn assert_trades_paid_once(sb: &Sandbox, events: &[&str]) {
    let trades: Vec<String> = events.iter().map(|e| format!("trade-{e}")).collect();
    let keys = assert_paid_once(sb, PaidBy::Key, &trades, "feed events");
    let trades = keys.keys().filter(|k| k.contains(":payout:trade-")).count();
    assert_eq!(trades, events.len(), "{keys:?}");
}

async fn position(wh: &pfsync::tables::Warehouse, feed: &str) -> Option<i64> {
    let log = open_existing(wh, &PAYOUT_LOG).await.unwrap().unwrap();
    pfsync::payouts::log::feed_position(&log, &format!("pfsync.feed.{feed}")).await.unwrap()
}

/// Where the feed's next read starts.
async fn next_start(wh: &pfsync::tables::Warehouse, feed: &str) -> Option<i64> {
    let log = open_existing(wh, &PAYOUT_LOG).await.unwrap().unwrap();
    pfsync::payouts::log::feed_position(&log, &format!("pfsync.feed.{feed}.from")).await.unwrap()
}

/// One commit of the payout log: the operation ids of its intents, its application transactions (app id,
/// version).
type Commit = (Vec<String>, Vec<(String, i64)>);

/// The payout log's commits, read from the Delta log's JSON files as another engine would.
fn log_commits(dir: &std::path::Path) -> Vec<Commit> {
    let log_dir = dir.join("purpleflea/payouts/log/_delta_log");
    let mut files: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let mut txns = Vec::new();
        let mut adds = Vec::new();
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(t) = v.get("txn") {
                txns.push((t["appId"].as_str().unwrap().to_string(), t["version"].as_i64().unwrap()));
            }
            if let Some(a) = v.get("add") {
                adds.push(a["path"].as_str().unwrap().to_string());
            }
        }
        let data: Vec<String> =
            adds.iter().map(|p| dir.join("purpleflea/payouts/log").join(p)).flat_map(intent_ids).collect();
        out.push((data, txns));
    }
    out
}

/// Operation ids of the intent rows of one data file of the payout log.
fn intent_ids(file: std::path::PathBuf) -> Vec<String> {
    use arrow::array::AsArray;
    // Partition values here are dates: the add path needs no percent-decoding.
    let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let id = batch.column_by_name("operation_id").unwrap().as_string::<i32>().clone();
        let event = batch.column_by_name("event").unwrap().as_string::<i32>().clone();
        for i in 0..batch.num_rows() {
            if event.value(i) == "intent" {
                ids.push(id.value(i).to_string());
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_in_several_commits_are_paid_once_each_across_runs_kills_and_rereads() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let events = dir.path().join("events");
    let mut t = events_table(&events, true).await;
    t = append(t, &[("e1", "agent-000001", "1.25"), ("e2", "agent-000002", "2.50")]).await;
    t = append(t, &[("e3", "agent-000003", "0.75")]).await;
    t = append(t, &[("e4", "agent-000004", "3.00"), ("e5", "agent-000005", "1.00")]).await;
    let cfg = config(dir.path(), "trades", &events);

    let o = run(payouts_cmd(&sb, dir.path()).config(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_trades_paid_once(&sb, &["e1", "e2", "e3", "e4", "e5"]);
    assert_eq!(position(&wh, "trades").await, Some(3), "the feed moved on to the table's version");
    assert_eq!(next_start(&wh, "trades").await, Some(4));

    // More events, and a delete the query ignores (it pays inserts only); the run dies after its sends.
    t = append(t, &[("e6", "agent-000006", "4.00"), ("e7", "agent-000007", "0.50")]).await;
    let (t, _) = t.delete().with_predicate("event_id = 'e1'").await.unwrap();
    assert_eq!(t.version(), Some(5));
    let o = run(payouts_cmd(&sb, dir.path()).config(&cfg).env("PFSYNC_CRASH_AT", "after_send"));
    assert_eq!(o.status.code(), None, "killed: {}", String::from_utf8_lossy(&o.stderr));
    // The consumed version landed in the commit of the intents it produced; the next read still starts
    // where the killed run's did, since its operations have no outcome in the log.
    assert_eq!(position(&wh, "trades").await, Some(5), "consumed with the intents");
    assert_eq!(next_start(&wh, "trades").await, Some(4), "a killed run does not move the next read on");
    let commits = log_commits(dir.path());
    let with_intents: Vec<_> = commits.iter().filter(|(ids, _)| ids.iter().any(|i| i == "trade-e6")).collect();
    assert_eq!(with_intents.len(), 1, "{commits:?}");
    let txns = &with_intents[0].1;
    assert!(txns.contains(&("pfsync.feed.trades".to_string(), 5)), "{txns:?}");
    assert!(txns.contains(&("pfsync.feed.trades.from".to_string(), 4)), "{txns:?}");
    assert!(txns.iter().any(|(a, _)| a == "pfsync.payouts.default"), "{txns:?}");
    let later = Later::default();
    wait_out_in_flight(&later);
    let o = run(payouts_cmd(&sb, dir.path()).later(&later).config(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_trades_paid_once(&sb, &["e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
    assert_eq!(position(&wh, "trades").await, Some(5));
    assert_eq!(next_start(&wh, "trades").await, Some(6), "everything final: the next read starts after it");

    // Nothing new: nothing sent.
    let executed = sb.stats().executed;
    let o = run(payouts_cmd(&sb, dir.path()).later(&later).config(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sb.stats().executed, executed);

    // An update of a paid event (its pre- and post-image rows): the query pays inserts only, so nothing
    // moves, and the feed moves past it.
    let t = deltalake::open_table(url::Url::from_directory_path(&events).unwrap()).await.unwrap();
    let (t, m) = t.update().with_predicate("event_id = 'e2'").with_update("amount", "'9.99'").await.unwrap();
    assert_eq!((m.num_updated_rows, t.version()), (1, Some(6)));
    let o = run(payouts_cmd(&sb, dir.path()).later(&later).config(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sb.stats().executed, executed, "an update is not an insert: nothing paid");
    assert_eq!(next_start(&wh, "trades").await, Some(7));

    // The same table read again from the start (a new feed name has no position): every id is final.
    let replay = config(dir.path(), "replay", &events);
    let o = run(payouts_cmd(&sb, dir.path()).later(&later).config(&replay));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sb.stats().executed, executed, "a re-read pays nothing twice");
    assert_trades_paid_once(&sb, &["e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
    assert_eq!(position(&wh, "replay").await, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_change_data_feed_stops_the_run_with_its_message() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("plain");
    let t = events_table(&events, false).await;
    append(t, &[("e1", "agent-000001", "1.25")]).await;
    let cfg = config(dir.path(), "plain", &events);
    let before = sb.stats().executed;
    let o = run(payouts_cmd(&sb, dir.path()).config(&cfg));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not record a change data feed"), "{err}");
    assert_eq!(sb.stats().executed, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacuumed_table_whose_history_no_longer_covers_the_position_stops_the_run() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("vacuumed");
    let t = events_table(&events, true).await;
    let t = append(t, &[("e1", "agent-000001", "1.25")]).await;
    // An overwrite removes the first file; a vacuum with no retention deletes it.
    let schema =
        Arc::new(Schema::new(["event_id", "agent_id", "amount"].map(|n| Field::new(n, DataType::Utf8, true)).to_vec()));
    let col = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let batch = RecordBatch::try_new(schema, vec![col("e2"), col("agent-000002"), col("2.00")]).unwrap();
    let t = t.write(vec![batch]).with_save_mode(deltalake::protocol::SaveMode::Overwrite).await.unwrap();
    let (_, metrics) = t
        .vacuum()
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .await
        .unwrap();
    assert!(!metrics.files_deleted.is_empty(), "the vacuum deleted the first version's file");
    let cfg = config(dir.path(), "vacuumed", &events);
    let before = sb.stats().executed;
    let o = run(payouts_cmd(&sb, dir.path()).config(&cfg));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("cannot be read from version 0"), "{err}");
    assert_eq!(sb.stats().executed, before, "nothing paid");
    // Moved on by hand: a new feed from a version whose changes are still there (a later append).
    let t = deltalake::open_table(url::Url::from_directory_path(&events).unwrap()).await.unwrap();
    let t = append(t, &[("e3", "agent-000003", "3.00")]).await;
    let moved = config(dir.path(), "moved", &events);
    let mut text = std::fs::read_to_string(&moved).unwrap();
    text.push_str(&format!("start_version = {}\n", t.version().unwrap()));
    std::fs::write(&moved, text).unwrap();
    let o = run(payouts_cmd(&sb, dir.path()).config(&moved));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_trades_paid_once(&sb, &["e3"]);
}
