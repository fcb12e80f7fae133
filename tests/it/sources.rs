//! Sources as Databricks writes them: upstream tables with nullable and extra columns, rows deleted through
//! deletion vectors, column mapping, and protocols delta-rs cannot read. The two fixtures in
//! `tests/fixtures/delta/` were written by Databricks Runtime (see the README there); each test reads a
//! copy in a temp folder.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use pfsync::payouts::{PayoutError, PayoutOptions, PayoutReport};
use pfsync::sandbox::Sandbox;
use pfsync::tables::{ESCROW_ACTIONS, PENDING_PAYOUTS, Warehouse, open_existing};

use crate::common::{PfsyncCommand, client, pay_with, pfsync, sandbox, text, warehouse};

/// Copy a fixture table to `dest` (the fixtures are never written).
fn copy_fixture(name: &str, dest: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::write(&target, std::fs::read(entry.path()).unwrap()).unwrap();
            }
        }
    }
    copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta").join(name), dest);
}

async fn pay(sb: &Sandbox, wh: &Warehouse, opts: &PayoutOptions) -> Result<PayoutReport, PayoutError> {
    pay_with(&pfsync::provider::seed::SeedProvider::new(client(sb), true), wh, opts).await
}

/// The provider's payouts made under pfsync's keys, by operation id: (how many, reason of the first).
fn paid(sb: &Sandbox) -> HashMap<String, (usize, String)> {
    let mut out: HashMap<String, (usize, String)> = HashMap::new();
    for t in sb.ledger().transactions() {
        if let Some(id) = t.idempotency_key.as_deref().and_then(|k| k.strip_prefix("pfsync:default:payout:")) {
            let e = out.entry(id.to_string()).or_insert((0, t.reference.clone().unwrap_or_default()));
            e.0 += 1;
        }
    }
    out
}

fn registered(name: &str, dir: &Path) -> (String, url::Url) {
    (name.to_string(), url::Url::from_directory_path(dir).unwrap())
}

/// What Spark's `saveAsTable` makes of an upstream job's DataFrame: every column nullable, columns of its
/// own (first, even), a wider decimal. pfsync checks only the columns it reads.
#[tokio::test]
async fn a_source_table_with_nullable_and_extra_columns_is_paid() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let schema = Arc::new(Schema::new(vec![
        Field::new("source_system", DataType::Utf8, true),
        Field::new("payout_id", DataType::Utf8, true),
        Field::new("agent_id", DataType::Utf8, true),
        Field::new("amount_usd", DataType::Decimal128(38, 6), true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("requested_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("batch_no", DataType::Int64, true),
    ]));
    let text = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let amounts = Decimal128Array::from(vec![1_250_000, 3_000_000]).with_precision_and_scale(38, 6).unwrap();
    let columns: Vec<ArrayRef> = vec![
        text(&["labeling", "labeling"]),
        text(&["spark-1", "spark-2"]),
        text(&["agent-000001", "agent-000002"]),
        Arc::new(amounts),
        text(&["task 1", "task 2"]),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(1_764_000_000_000_000), None]).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![7, 7])),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let location = wh.location(&PENDING_PAYOUTS.table_name());
    std::fs::create_dir_all(location.to_file_path().unwrap()).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(location).unwrap().build().unwrap();
    table.write(vec![batch]).await.unwrap();

    let r = pay(&sb, &wh, &PayoutOptions::default()).await.unwrap();
    assert_eq!((r.completed, r.rejected_rows, r.unknown), (2, 0, 0), "{r}");
    let paid = paid(&sb);
    assert_eq!(paid.get("spark-1"), Some(&(1, "task 1".to_string())));
    assert_eq!(paid.get("spark-2"), Some(&(1, "task 2".to_string())));
    let amounts: Vec<String> = sb
        .ledger()
        .transactions()
        .filter(|t| t.idempotency_key.as_deref().is_some_and(|k| k.contains(":spark-")))
        .map(|t| t.amount_usd.to_string())
        .collect();
    assert_eq!(amounts.len(), 2);
    assert!(amounts.contains(&"1.25".to_string()) && amounts.contains(&"3.00".to_string()), "{amounts:?}");
}

/// A column pfsync reads with a type it cannot convert, or a required column missing, stops the run before
/// anything is paid (exit 4), naming the column; a column it does not read may be anything.
#[tokio::test]
async fn a_source_table_missing_a_column_or_with_an_unusable_type_is_refused_naming_it() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let schema = Arc::new(Schema::new(vec![
        Field::new("payout_id", DataType::Utf8, true),
        Field::new("agent_id", DataType::Int64, true),
        Field::new("amount_usd", DataType::Utf8, true),
        Field::new("requested_by", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["x-1"])),
        Arc::new(Int64Array::from(vec![1])),
        Arc::new(StringArray::from(vec!["1.00"])),
        Arc::new(Int64Array::from(vec![1])),
    ];
    let location = wh.location(&PENDING_PAYOUTS.table_name());
    std::fs::create_dir_all(location.to_file_path().unwrap()).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(location).unwrap().build().unwrap();
    table.write(vec![RecordBatch::try_new(schema, columns).unwrap()]).await.unwrap();

    let e = pay(&sb, &wh, &PayoutOptions::default()).await.unwrap_err();
    assert_eq!(e.class(), pfsync::errors::ErrorClass::Storage, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("purpleflea.payouts.pending") && msg.contains("agent_id") && msg.contains("BIGINT"), "{msg}");
    assert!(msg.contains("`reason") && msg.contains("missing"), "{msg}");
    assert!(!msg.contains("column `requested_by`"), "a column pfsync does not read is not checked: {msg}");
    assert!(!msg.contains("column `amount_usd`"), "text amounts are read exactly: {msg}");
    assert_eq!(sb.stats().executed, 0, "nothing was sent");
}

/// pfsync never creates a table an upstream job owns at run time: a missing source is an empty source.
/// `pfsync init` creates them (empty), for an admin to register before upstream jobs write.
#[tokio::test]
async fn payouts_do_not_create_the_source_tables_and_init_does() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let r = pay(&sb, &wh, &PayoutOptions::default()).await.unwrap();
    assert_eq!((r.source_rows, r.completed), (0, 0), "{r}");
    for spec in [&PENDING_PAYOUTS, &ESCROW_ACTIONS] {
        assert!(open_existing(&wh, spec).await.unwrap().is_none(), "{} was not created", spec.name);
        assert!(!wh.location(&spec.table_name()).to_file_path().unwrap().exists(), "{}: no folder", spec.name);
    }
    assert!(open_existing(&wh, &pfsync::tables::PAYOUT_LOG).await.unwrap().is_some(), "the log is pfsync's own");

    let out = pfsync().warehouse(dir.path()).arg("init").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for spec in [&PENDING_PAYOUTS, &ESCROW_ACTIONS] {
        assert!(open_existing(&wh, spec).await.unwrap().is_some(), "init created {}", spec.name);
    }
}

/// Databricks deleted `value IN (0, 9)` from the fixture through a deletion vector: the data file still
/// holds all ten rows. A payouts source over it pays 1..8, each once, and never 0 or 9.
#[tokio::test]
async fn the_deletion_vector_fixture_used_as_a_payouts_source_pays_only_the_rows_that_are_not_deleted() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let table = dir.path().join("upstream/dv");
    copy_fixture("table-with-dv-small", &table);
    let opts = PayoutOptions {
        extra_tables: vec![registered("dv", &table)],
        payout_sql: Some(
            "SELECT concat('dv-', CAST(value AS STRING)) AS payout_id, 'agent-000001' AS agent_id, \
             CAST(value + 1 AS DECIMAL(18,2)) AS amount_usd, concat('row ', CAST(value AS STRING)) AS reason FROM dv"
                .into(),
        ),
        ..PayoutOptions::default()
    };
    let r = pay(&sb, &wh, &opts).await.unwrap();
    assert_eq!((r.source_rows, r.completed, r.rejected_rows), (8, 8, 0), "{r}");
    let paid = paid(&sb);
    for deleted in [0, 9] {
        assert!(!paid.contains_key(&format!("dv-{deleted}")), "row {deleted} was deleted: {paid:?}");
    }
    for v in 1..=8 {
        assert_eq!(paid.get(&format!("dv-{v}")), Some(&(1, format!("row {v}"))), "row {v} once: {paid:?}");
    }
    assert_eq!(paid.len(), 8);
    let again = pay(&sb, &wh, &opts).await.unwrap();
    assert_eq!((again.completed, again.already_final), (0, 8), "{again}");
}

/// delta-rs before 1.1.3 could apply a deletion vector's mask to the wrong rows when a filter or a limit
/// was pushed into the scan (delta-rs PR 4692); the deleted rows must stay deleted under both.
#[tokio::test]
async fn deleted_rows_stay_deleted_under_filter_and_limit_pushdown() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let table = dir.path().join("dv");
    copy_fixture("table-with-dv-small", &table);
    let ctx = datafusion::prelude::SessionContext::new();
    pfsync::tables::register_location(&ctx, &wh, "dv", &url::Url::from_directory_path(&table).unwrap()).await.unwrap();
    let values = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let mut out = Vec::new();
            for b in batches {
                let c = arrow::compute::cast(b.column(0), &DataType::Int64).unwrap();
                out.extend(c.as_any().downcast_ref::<Int64Array>().unwrap().iter().flatten());
            }
            out.sort();
            out
        }
    };
    assert_eq!(values("SELECT value FROM dv").await, (1..=8).collect::<Vec<i64>>());
    assert_eq!(values("SELECT value FROM dv WHERE value >= 5").await, vec![5, 6, 7, 8]);
    assert_eq!(values("SELECT value FROM dv WHERE value <> 4").await, vec![1, 2, 3, 5, 6, 7, 8]);
    let limited = values("SELECT value FROM dv LIMIT 3").await;
    assert!(limited.len() == 3 && limited.iter().all(|v| (1..=8).contains(v)), "{limited:?}");
    let filtered = values("SELECT value FROM dv WHERE value > 0 LIMIT 9").await;
    assert_eq!(filtered, (1..=8).collect::<Vec<i64>>());
    assert_eq!(crate::common::count(&ctx, "SELECT count(*) FROM dv").await, 8);
}

/// The column-mapping fixture stores its columns under physical names (`col-173b...`) in data files
/// under random prefixes; a source query reads it by the logical names, spaces and all.
#[tokio::test]
async fn the_column_mapping_fixture_is_read_by_logical_names() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let table = dir.path().join("upstream/people");
    copy_fixture("table_with_column_mapping", &table);
    let opts = PayoutOptions {
        extra_tables: vec![registered("people", &table)],
        payout_sql: Some(
            "SELECT concat('cm-', replace(\"Super Name\", ' ', '_')) AS payout_id, 'agent-000002' AS agent_id, \
             2.50 AS amount_usd, \"Company Very Short\" AS reason FROM people"
                .into(),
        ),
        ..PayoutOptions::default()
    };
    let r = pay(&sb, &wh, &opts).await.unwrap();
    assert_eq!((r.source_rows, r.completed, r.rejected_rows), (5, 5, 0), "{r}");
    let paid = paid(&sb);
    assert_eq!(paid.get("cm-Timothy_Lamb"), Some(&(1, "BME".to_string())), "{paid:?}");
    let bms = paid.iter().filter(|(id, (n, reason))| id.starts_with("cm-") && *n == 1 && reason == "BMS").count();
    assert_eq!(bms, 4, "{paid:?}");
}

/// A table whose protocol needs a reader feature delta-rs does not have cannot be read correctly (a
/// reader that ignored it might pay deleted rows): the run stops with exit 4, naming the feature.
#[tokio::test]
async fn a_table_needing_a_reader_feature_delta_rs_cannot_read_exits_4_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let pending = wh.location(&PENDING_PAYOUTS.table_name()).to_file_path().unwrap();
    copy_fixture("table-with-dv-small", &pending);
    let first = pending.join("_delta_log/00000000000000000000.json");
    let log = std::fs::read_to_string(&first).unwrap();
    let features = r#""readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]"#;
    assert!(log.contains(features));
    // One feature nobody knows yet (delta_kernel refuses it while loading), one it knows and delta-rs does
    // not read (pfsync's own protocol check refuses it); the binary, on the default source table.
    for feature in ["typeWidening", "fancyFutureFeature"] {
        let future = features.replace("[\"deletionVectors\"]", &format!("[\"deletionVectors\",\"{feature}\"]"));
        std::fs::write(&first, log.replace(features, &future)).unwrap();
        let out = pfsync()
            .warehouse(dir.path())
            .args(["sql", "SELECT count(*) FROM purpleflea.payouts.pending"])
            .output()
            .unwrap();
        let text = text(&out);
        assert_eq!(out.status.code(), Some(4), "{text}");
        let named = format!("needs a reader feature delta-rs cannot read: {feature};");
        assert!(text.contains("purpleflea.payouts.pending") && text.contains(&named), "{text}");
    }

    // And a table registered for a source query.
    let sb = sandbox(5).await;
    let other = tempfile::tempdir().unwrap();
    let opts = PayoutOptions {
        extra_tables: vec![registered("future", &pending)],
        payout_sql: Some("SELECT * FROM future".into()),
        ..PayoutOptions::default()
    };
    let e = pay(&sb, &warehouse(&other), &opts).await.unwrap_err();
    assert_eq!(e.class(), pfsync::errors::ErrorClass::Storage, "{e}");
    assert!(e.to_string().contains("fancyFutureFeature"), "{e}");
}
