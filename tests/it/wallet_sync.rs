//! `sync wallets` into a real Delta table on disk, read back three ways: the deltalake crate, DataFusion
//! SQL, and the raw Parquet files plus `_delta_log` JSON (as another engine would).

use std::collections::{HashMap, HashSet};
use std::fs::File;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::datatypes::{DataType, TimeUnit};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use pfsync::progress::Progress;
use pfsync::provider::records::Wallet;
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{CommitInfo, TableError, WALLETS, Warehouse, sql_context};
use serde_json::Value;

use crate::common::{client, sandbox, usd, warehouse};

fn commit(run: &str) -> CommitInfo {
    CommitInfo { run_id: run.to_string(), step: "sync.wallets" }
}

async fn query(wh: &Warehouse, sql: &str) -> Vec<arrow::array::RecordBatch> {
    let ctx = sql_context(wh).await.unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// balance per agent as the table has it, read through DataFusion.
async fn balances(wh: &Warehouse) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for b in query(wh, "SELECT agent_id, balance_usd FROM purpleflea.agents.wallets").await {
        // DataFusion may hand strings back as Utf8View; cast to plain Utf8 to read them.
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let bal = b.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.insert(ids.value(i).to_string(), bal.value(i));
        }
    }
    out
}

/// Replay `_delta_log/*.json` by hand: the active files, the table metadata, and every commitInfo.
fn read_log(dir: &std::path::Path) -> (Vec<String>, Value, Vec<Value>) {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let (mut active, mut metadata, mut commits) = (Vec::<String>::new(), Value::Null, Vec::new());
    for n in names {
        for line in std::fs::read_to_string(dir.join("_delta_log").join(n)).unwrap().lines() {
            let action: Value = serde_json::from_str(line).unwrap();
            if let Some(add) = action.get("add") {
                active.push(add["path"].as_str().unwrap().to_string());
            }
            if let Some(rm) = action.get("remove") {
                let p = rm["path"].as_str().unwrap();
                active.retain(|a| a != p);
            }
            if let Some(m) = action.get("metaData") {
                metadata = m.clone();
            }
            if let Some(c) = action.get("commitInfo") {
                commits.push(c.clone());
            }
        }
    }
    (active, metadata, commits)
}

#[tokio::test]
async fn a_synced_wallets_table_is_readable_by_another_engine() {
    let sb = sandbox(250).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let report =
        sync_table::<Wallet>(&c, &wh, &commit("run-1"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    assert_eq!((report.rows_read, report.inserted, report.failed), (251, 251, 0));

    // 1. Through the deltalake crate.
    let location = wh.location(&WALLETS.table_name());
    let table = deltalake::open_table(location.clone()).await.unwrap();
    assert_eq!(table.version(), report.version);
    let snapshot = table.snapshot().unwrap();
    assert_eq!(snapshot.metadata().description(), Some(WALLETS.comment));
    assert_eq!(snapshot.metadata().configuration().get("delta.enableChangeDataFeed").map(String::as_str), Some("true"));

    // 2. Raw files: Parquet data and the JSON log, no Delta library involved.
    let path = location.to_file_path().unwrap();
    let (active, metadata, commits) = read_log(&path);
    assert_eq!(metadata["description"], WALLETS.comment);
    assert_eq!(metadata["configuration"]["delta.enableChangeDataFeed"], "true");
    let schema: Value = serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
    let fields: Vec<(String, String, bool)> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (f["name"].as_str().unwrap().into(), f["type"].as_str().unwrap().into(), f["nullable"].as_bool().unwrap())
        })
        .collect();
    let expected: Vec<(String, String, bool)> = [
        ("agent_id", "string", false),
        ("wallet_address", "string", true),
        ("balance_usd", "double", true),
        ("active_escrow_count", "integer", true),
        ("total_earned_usd", "double", true),
        ("referral_code", "string", true),
        ("registered_at", "timestamp", true),
        ("last_synced_at", "timestamp", true),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
    .collect();
    assert_eq!(fields, expected);
    assert_eq!(schema["fields"][0]["metadata"]["comment"], "Purple Flea agent identifier (NOT NULL, PK)");
    assert!(commits.iter().any(|c| c["pfsync.run_id"] == "run-1"), "{commits:?}");

    let mut rows = 0;
    let mut ids = HashSet::new();
    for f in &active {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path.join(f)).unwrap()).unwrap();
        let s = reader.schema().clone();
        assert_eq!(s.field_with_name("balance_usd").unwrap().data_type(), &DataType::Float64);
        assert_eq!(s.field_with_name("active_escrow_count").unwrap().data_type(), &DataType::Int32);
        assert!(matches!(
            s.field_with_name("registered_at").unwrap().data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(_))
        ));
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            rows += b.num_rows();
            let col = b.column_by_name("agent_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
    }
    assert_eq!(rows, 251);
    assert_eq!(ids.len(), 251);

    // 3. The values are the API's.
    let bal = balances(&wh).await;
    for w in sb.ledger().wallets() {
        assert_eq!(bal[&w.agent_id], w.balance_usd.to_f64_lossy_for_display_column(), "{}", w.agent_id);
    }
}

#[tokio::test]
async fn syncing_twice_leaves_one_row_per_agent_with_the_latest_values() {
    let sb = sandbox(120).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    sync_table::<Wallet>(&c, &wh, &commit("a"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    {
        let mut l = sb.ledger();
        l.payout("agent-000005", usd("100.01"), "bonus", None).unwrap();
        l.faucet_claim("agent-000006", None).unwrap();
    }
    let opts = SyncOptions { page_size: 7, batch_rows: 50, ..SyncOptions::default() };
    let r = sync_table::<Wallet>(&c, &wh, &commit("b"), &opts, &Progress::hidden()).await.unwrap();
    assert_eq!((r.inserted, r.updated, r.unchanged, r.failed), (0, 2, 119, 0));
    let batches =
        query(&wh, "SELECT count(*) AS n, count(DISTINCT agent_id) AS d FROM purpleflea.agents.wallets").await;
    let n = batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
    let d = batches[0].column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
    assert_eq!((n, d), (121, 121));
    let bal = balances(&wh).await;
    for w in sb.ledger().wallets() {
        assert_eq!(bal[&w.agent_id], w.balance_usd.to_f64_lossy_for_display_column(), "{}", w.agent_id);
    }
}

#[tokio::test]
async fn the_seed_query_runs_verbatim_over_the_synced_table() {
    let sb = sandbox(300).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    sync_table::<Wallet>(&c, &wh, &commit("q"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    let batches = query(&wh, pfsync::app::SEED_QUERY).await;
    let mut earned = Vec::new();
    for b in &batches {
        let bal = b.column_by_name("balance_usd").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
        let e = b.column_by_name("total_earned_usd").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            assert!(bal.value(i) > 100.0);
            earned.push(e.value(i));
        }
    }
    assert!(!earned.is_empty() && earned.len() <= 50);
    assert!(earned.windows(2).all(|w| w[0] >= w[1]), "ordered by total_earned_usd DESC");
}

#[tokio::test]
async fn an_existing_table_with_another_schema_is_refused_untouched() {
    let sb = sandbox(5).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let location = wh.location(&WALLETS.table_name());
    std::fs::create_dir_all(location.to_file_path().unwrap()).unwrap();
    let wrong = deltalake::DeltaTable::try_from_url(location.clone())
        .await
        .unwrap()
        .create()
        .with_columns(vec![
            deltalake::kernel::StructField::new("agent_id", deltalake::kernel::DataType::STRING, false),
            deltalake::kernel::StructField::new("balance_usd", deltalake::kernel::DataType::STRING, true),
        ])
        .await
        .unwrap();
    let version = wrong.version();
    let e =
        sync_table::<Wallet>(&c, &wh, &commit("x"), &SyncOptions::default(), &Progress::hidden()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, pfsync::sync::SyncError::Table(TableError::IncompatibleSchema { .. })), "{msg}");
    assert!(msg.contains("wallet_address") || msg.contains("balance_usd"), "{msg}");
    let after = deltalake::open_table(location).await.unwrap();
    assert_eq!(after.version(), version, "nothing was written");
    let history: Vec<_> = after.history(None).try_collect().await.unwrap();
    assert_eq!(history.len(), 1);
}
