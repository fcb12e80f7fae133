//! Change-feed sources (`[[feeds]]`): events appended to a CDF-enabled Delta table in several commits are
//! paid once each, across runs, a kill after send, a delete in the events table and a re-read from the
//! start; a table without a change data feed stops the run with its message.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::DeltaTable;
use deltalake::kernel::{DataType as DeltaType, StructField};
use pfsync::payouts::feed::FeedKey;
use pfsync::sandbox::Sandbox;
use pfsync::tables::{PAYOUT_LOG, open_existing};

use crate::common::{
    Later, PaidBy, PfsyncCommand, assert_paid_once, output_in_place as run, paid_per, sandbox, warehouse,
};
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

/// The feed `name` of `namespace` over the table at `table`: whose positions these are.
async fn feed_key(namespace: &str, name: &str, table: &std::path::Path) -> FeedKey {
    FeedKey {
        namespace: namespace.into(),
        name: name.into(),
        table_id: table_id(table).await,
        location: pfsync::tables::location_url(&table.display().to_string()).unwrap(),
    }
}

/// The last version of its table the feed consumed.
async fn position(wh: &pfsync::tables::Warehouse, feed: &FeedKey) -> Option<i64> {
    let log = open_existing(wh, &PAYOUT_LOG).await.unwrap().unwrap();
    pfsync::payouts::log::feed_position(&log, &feed.app_id()).await.unwrap()
}

/// Where the feed's next read starts.
async fn next_start(wh: &pfsync::tables::Warehouse, feed: &FeedKey) -> Option<i64> {
    let log = open_existing(wh, &PAYOUT_LOG).await.unwrap().unwrap();
    pfsync::payouts::log::feed_position(&log, &feed.from_app_id()).await.unwrap()
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
    let trades = feed_key("default", "trades", &events).await;

    let o = run(payouts_cmd(&sb, dir.path()).config(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_trades_paid_once(&sb, &["e1", "e2", "e3", "e4", "e5"]);
    assert_eq!(position(&wh, &trades).await, Some(3), "the feed moved on to the table's version");
    assert_eq!(next_start(&wh, &trades).await, Some(4));

    // More events, and a delete the query ignores (it pays inserts only); the run dies after its sends.
    t = append(t, &[("e6", "agent-000006", "4.00"), ("e7", "agent-000007", "0.50")]).await;
    let (t, _) = t.delete().with_predicate("event_id = 'e1'").await.unwrap();
    assert_eq!(t.version(), Some(5));
    let o = run(payouts_cmd(&sb, dir.path()).config(&cfg).env("PFSYNC_CRASH_AT", "after_send"));
    assert_eq!(o.status.code(), None, "killed: {}", String::from_utf8_lossy(&o.stderr));
    // The consumed version landed in the commit of the intents it produced; the next read still starts
    // where the killed run's did, since its operations have no outcome in the log.
    assert_eq!(position(&wh, &trades).await, Some(5), "consumed with the intents");
    assert_eq!(next_start(&wh, &trades).await, Some(4), "a killed run does not move the next read on");
    let commits = log_commits(dir.path());
    let with_intents: Vec<_> = commits.iter().filter(|(ids, _)| ids.iter().any(|i| i == "trade-e6")).collect();
    assert_eq!(with_intents.len(), 1, "{commits:?}");
    let txns = &with_intents[0].1;
    assert!(txns.contains(&(trades.app_id(), 5)), "{txns:?}");
    assert!(txns.contains(&(trades.from_app_id(), 4)), "{txns:?}");
    assert!(txns.contains(&(trades.table_app_id(), trades.fingerprint())), "{txns:?}");
    assert!(trades.app_id().starts_with("pfsync.feed.default.trades."), "{}", trades.app_id());
    assert!(txns.iter().any(|(a, _)| a == "pfsync.payouts.default"), "{txns:?}");
    let later = Later::default();
    wait_out_in_flight(&later);
    let o = run(payouts_cmd(&sb, dir.path()).later(&later).config(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_trades_paid_once(&sb, &["e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
    assert_eq!(position(&wh, &trades).await, Some(5));
    assert_eq!(next_start(&wh, &trades).await, Some(6), "everything final: the next read starts after it");

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
    assert_eq!(next_start(&wh, &trades).await, Some(7));

    // The same table read again from the start (a new feed name has no position): every id is final.
    let replay = config(dir.path(), "replay", &events);
    let o = run(payouts_cmd(&sb, dir.path()).later(&later).config(&replay));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sb.stats().executed, executed, "a re-read pays nothing twice");
    assert_trades_paid_once(&sb, &["e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
    assert_eq!(position(&wh, &feed_key("default", "replay", &events).await).await, Some(6));
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

/// The Delta table id of a table (its metadata id, kept for the table's life).
async fn table_id(path: &std::path::Path) -> String {
    let t = deltalake::open_table(url::Url::from_directory_path(path).unwrap()).await.unwrap();
    t.snapshot().unwrap().metadata().id().to_string()
}

/// A feed's position belongs to one feed of one namespace over one table. Two namespaces on one warehouse,
/// each with a feed named `trades` over its own table: the second used to start at the first one's
/// position and read 0 rows, exit 0, on every run. A feed re-pointed at another table under the same name
/// stops (exit 2) saying how to start it anew, and pinning the new table's id reads it from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_of_one_name_in_two_namespaces_or_over_another_table_never_share_a_position() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let alpha_events = dir.path().join("alpha-events");
    let mut t = events_table(&alpha_events, true).await;
    t = append(t, &[("a1", "agent-000001", "1.00")]).await;
    t = append(t, &[("a2", "agent-000002", "2.00")]).await;
    append(t, &[("a3", "agent-000003", "3.00")]).await;
    let beta_events = dir.path().join("beta-events");
    let t = events_table(&beta_events, true).await;
    append(t, &[("b1", "agent-000004", "4.00"), ("b2", "agent-000005", "5.00")]).await;
    let gamma_events = dir.path().join("gamma-events");
    let t = events_table(&gamma_events, true).await;
    append(t, &[("c1", "agent-000006", "6.00"), ("c2", "agent-000007", "7.00")]).await;
    let configs = |sub: &str, table: &std::path::Path| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        config(&d, "trades", table)
    };
    let (alpha, beta) = (configs("alpha", &alpha_events), configs("beta", &beta_events));
    let payouts = |namespace: &str, cfg: &std::path::Path| {
        let o = run(payouts_cmd(&sb, dir.path()).args(["--namespace", namespace]).arg("--config").arg(cfg));
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let paid = |namespace: &str, events: &[&str]| {
        let keys = paid_per(&sb, PaidBy::Key);
        for e in events {
            assert_eq!(keys.get(&format!("pfsync:{namespace}:payout:trade-{e}")).copied(), Some(1), "{e}: {keys:?}");
        }
        let prefix = format!("pfsync:{namespace}:payout:trade-");
        assert_eq!(keys.keys().filter(|k| k.starts_with(&prefix)).count(), events.len(), "{keys:?}");
    };

    for _ in 0..2 {
        let (code, err) = payouts("alpha", &alpha);
        assert_eq!(code, Some(0), "{err}");
        paid("alpha", &["a1", "a2", "a3"]);
        let (code, err) = payouts("beta", &beta);
        assert_eq!(code, Some(0), "{err}");
        paid("beta", &["b1", "b2"]);
    }

    // Namespace alpha's `trades` re-pointed at another table: its position belongs to the first one.
    let executed = sb.stats().executed;
    let repointed = configs("repointed", &gamma_events);
    let (code, err) = payouts("alpha", &repointed);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("another table") && err.contains("new name") && err.contains("table_id"), "{err}");
    assert_eq!(sb.stats().executed, executed, "nothing read, nothing paid");
    // Pinned to the new table by its id, the feed reads it from start_version.
    let mut text = std::fs::read_to_string(&repointed).unwrap();
    text.push_str(&format!("table_id = {:?}\n", table_id(&gamma_events).await));
    std::fs::write(&repointed, text).unwrap();
    for _ in 0..2 {
        let (code, err) = payouts("alpha", &repointed);
        assert_eq!(code, Some(0), "{err}");
        paid("alpha", &["a1", "a2", "a3", "c1", "c2"]);
    }
    // A pin that names another table than the one at the location stops the run before it reads.
    let (code, err) = payouts("alpha", &{
        let mut text = std::fs::read_to_string(&alpha).unwrap();
        text.push_str(&format!("table_id = {:?}\n", table_id(&beta_events).await));
        let p = dir.path().join("alpha").join("pinned-wrong.toml");
        std::fs::write(&p, text).unwrap();
        p
    });
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("table_id"), "{err}");
}

/// A log commit of no rows carrying a position as pfsync stored it before namespaces and tables were part
/// of it (`pfsync.feed.<name>`, `.from`).
async fn store_earlier_position(wh: &pfsync::tables::Warehouse, name: &str, consumed: i64, from: i64) {
    use deltalake::kernel::Transaction;
    use deltalake::kernel::transaction::CommitProperties;
    let commit = pfsync::tables::CommitInfo { run_id: "earlier".into(), step: "payouts" };
    let log = pfsync::tables::open_or_create(wh, &PAYOUT_LOG, &commit).await.unwrap();
    let txns = vec![
        Transaction::new(format!("pfsync.feed.{name}"), consumed),
        Transaction::new(format!("pfsync.feed.{name}.from"), from),
    ];
    log.write(vec![RecordBatch::new_empty(PAYOUT_LOG.arrow_schema())])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_commit_properties(CommitProperties::default().with_application_transactions(txns))
        .await
        .unwrap();
}

/// A position stored by an earlier pfsync (under the feed's name alone) keeps working for its feed: the
/// first feed of that name to read takes it over where that is unambiguous (no intent of another namespace
/// in the log, a version within its table), reads on from there, and claims it, so a feed of that name in
/// another namespace starts at its own start_version. Where the position may be another namespace's, the
/// run stops (exit 2) until start_version says where to read from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_stored_by_an_earlier_pfsync_is_taken_over_once_and_only_where_unambiguous() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let events = dir.path().join("events");
    let mut t = events_table(&events, true).await;
    t = append(t, &[("e1", "agent-000001", "1.25"), ("e2", "agent-000002", "2.50")]).await;
    append(t, &[("e3", "agent-000003", "0.75")]).await;
    // The earlier pfsync read versions 0 and 1 (e1 and e2 were its to pay).
    store_earlier_position(&wh, "trades", 1, 2).await;
    let cfg = config(dir.path(), "trades", &events);
    let trades = feed_key("default", "trades", &events).await;

    for _ in 0..2 {
        let o = run(payouts_cmd(&sb, dir.path()).arg("--config").arg(&cfg));
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert_trades_paid_once(&sb, &["e3"]);
        assert_eq!(next_start(&wh, &trades).await, Some(3), "read on from the earlier position");
    }
    let log = open_existing(&wh, &PAYOUT_LOG).await.unwrap().unwrap();
    let claim = pfsync::payouts::log::feed_position(&log, "pfsync.feed.trades.migrated").await.unwrap();
    assert_eq!(claim, Some(trades.fingerprint()), "claimed by this feed of this namespace and table");

    // The same name in another namespace: the earlier position is not its own, it reads from version 0
    // (trade-e3 is final in the log already: operation ids are one per log).
    let o = run(payouts_cmd(&sb, dir.path()).args(["--namespace", "other"]).arg("--config").arg(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let keys = paid_per(&sb, PaidBy::Key);
    for e in ["e1", "e2"] {
        assert_eq!(keys.get(&format!("pfsync:other:payout:trade-{e}")).copied(), Some(1), "{e}: {keys:?}");
    }
    assert_eq!(keys.keys().filter(|k| k.ends_with(":payout:trade-e3")).count(), 1, "{keys:?}");

    // A log that holds intents of another namespace: whose the earlier position is cannot be told.
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let warm_events = dir.path().join("warm-events");
    let t = events_table(&warm_events, true).await;
    append(t, &[("w1", "agent-000004", "1.00")]).await;
    let warmup = config(dir.path(), "warmup", &warm_events);
    let o = run(payouts_cmd(&sb, dir.path()).args(["--namespace", "other"]).arg("--config").arg(&warmup));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    store_earlier_position(&wh, "trades", 1, 2).await;
    let cfg = config(dir.path(), "trades", &events);
    let executed = sb.stats().executed;
    let o = run(payouts_cmd(&sb, dir.path()).arg("--config").arg(&cfg));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("other namespaces") && err.contains("start_version"), "{err}");
    assert_eq!(sb.stats().executed, executed, "nothing read, nothing paid");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("start_version = 2\n");
    std::fs::write(&cfg, text).unwrap();
    let o = run(payouts_cmd(&sb, dir.path()).arg("--config").arg(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let keys = paid_per(&sb, PaidBy::Key);
    let default: Vec<_> = keys.keys().filter(|k| k.starts_with("pfsync:default:")).collect();
    assert_eq!(default, ["pfsync:default:payout:trade-e3"], "{keys:?}");
}
