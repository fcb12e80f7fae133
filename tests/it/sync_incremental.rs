//! The sync issue's promises: incremental and exactly once, no rewrite of unchanged rows, crash and
//! concurrency safety, schema drift handled row by row.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use futures::TryStreamExt;
use pfsync::progress::Progress;
use pfsync::provider::records::{Escrow, Transaction, Wallet};
use pfsync::provider::seed::SeedClient as Client;
use pfsync::sandbox::Sandbox;
use pfsync::sync::{SyncError, SyncOptions, SyncReport, sync_table};
use pfsync::tables::{CommitInfo, ESCROWS, TRANSACTIONS, WALLETS, Warehouse, open_existing, sql_context};

use crate::common::{client, sandbox, until, usd, warehouse};

fn commit(run: &str) -> CommitInfo {
    CommitInfo { run_id: run.to_string(), step: "sync" }
}

async fn sync_all(c: &Client, wh: &Warehouse, opts: &SyncOptions) -> Result<Vec<SyncReport>, SyncError> {
    let p = Progress::hidden();
    Ok(vec![
        sync_table::<Wallet>(c, wh, &commit("w"), opts, &p).await?,
        sync_table::<Escrow>(c, wh, &commit("e"), opts, &p).await?,
        sync_table::<Transaction>(c, wh, &commit("t"), opts, &p).await?,
    ])
}

async fn rows(wh: &Warehouse, sql: &str) -> Vec<RecordBatch> {
    sql_context(wh).await.unwrap().sql(sql).await.unwrap().collect().await.unwrap()
}

/// First column as text, the rest joined with `|` as text: a table as comparable strings.
async fn table_as_text(wh: &Warehouse, sql: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for b in rows(wh, sql).await {
        let cols: Vec<StringArray> = b
            .columns()
            .iter()
            .map(|c| {
                let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
                c.as_any().downcast_ref::<StringArray>().unwrap().clone()
            })
            .collect();
        for i in 0..b.num_rows() {
            let key = cols[0].value(i).to_string();
            let rest: Vec<String> =
                cols[1..].iter().map(|c| if c.is_null(i) { "null".into() } else { c.value(i).to_string() }).collect();
            assert!(out.insert(key.clone(), rest.join("|")).is_none(), "duplicate key {key}");
        }
    }
    out
}

/// The three tables hold exactly what the API holds.
async fn assert_tables_equal_api(sb: &Sandbox, wh: &Warehouse) {
    // Money as exact cents on both sides: DOUBLE columns are cast to DECIMAL(18,2) in SQL.
    let wallets = table_as_text(
        wh,
        "SELECT agent_id, CAST(balance_usd AS DECIMAL(18,2)), CAST(total_earned_usd AS DECIMAL(18,2)), active_escrow_count \
         FROM purpleflea.agents.wallets",
    )
    .await;
    let escrows = table_as_text(wh, "SELECT escrow_id, status, amount_usd, tx_id FROM purpleflea.agents.escrows").await;
    let txs = table_as_text(wh, "SELECT tx_id, kind, amount_usd, agent_id FROM purpleflea.ledger.transactions").await;
    let l = sb.ledger();
    assert_eq!(wallets.len(), l.agent_count());
    for w in l.wallets() {
        let want = format!("{}|{}|{}", w.balance_usd, w.total_earned_usd, w.active_escrow_count);
        assert_eq!(wallets[&w.agent_id], want, "wallet {}", w.agent_id);
    }
    assert_eq!(escrows.len(), l.escrows().count());
    for e in l.escrows() {
        let want = format!("{}|{}|{}", e.status.as_str(), e.amount_usd, e.tx_id.as_deref().unwrap_or("null"));
        assert_eq!(escrows[&e.escrow_id], want, "escrow {}", e.escrow_id);
    }
    assert_eq!(txs.len(), l.transactions().count(), "every transaction once");
    for t in l.transactions() {
        assert_eq!(txs[&t.tx_id], format!("{}|{}|{}", t.kind.as_str(), t.amount_usd, t.agent_id));
    }
}

async fn versions(wh: &Warehouse) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for spec in [&WALLETS, &ESCROWS, &TRANSACTIONS] {
        out.push(open_existing(wh, spec).await.unwrap().and_then(|t| t.version()));
    }
    out
}

#[tokio::test]
async fn a_second_sync_with_no_changes_writes_no_data_rows() {
    let sb = sandbox(150).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let first = sync_all(&c, &wh, &SyncOptions::default()).await.unwrap();
    assert!(first.iter().all(|r| r.inserted > 0), "{first:?}");
    let before = versions(&wh).await;
    let second = sync_all(&c, &wh, &SyncOptions::default()).await.unwrap();
    for r in &second {
        assert_eq!((r.inserted, r.updated, r.failed), (0, 0, 0), "{r}");
        assert!(!r.full, "incremental after the first run: {r}");
    }
    assert_eq!(versions(&wh).await, before, "no commit at all");
    assert_tables_equal_api(&sb, &wh).await;
}

#[tokio::test]
async fn a_change_to_three_wallets_updates_exactly_three_rows_as_cdf_shows() {
    let sb = sandbox(100).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    sync_table::<Wallet>(&c, &wh, &commit("a"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    let v = open_existing(&wh, &WALLETS).await.unwrap().unwrap().version().unwrap();
    let changed = ["agent-000003", "agent-000042", "agent-000099"];
    for a in changed {
        sb.ledger().payout(a, usd("3.00"), "bonus", None).unwrap();
    }
    let r = sync_table::<Wallet>(&c, &wh, &commit("b"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    assert_eq!((r.inserted, r.updated), (0, 3), "{r}");
    assert_eq!(r.version, Some(v + 1), "one commit");

    let table = open_existing(&wh, &WALLETS).await.unwrap().unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    let plan = table.clone().scan_cdf().with_starting_version(v + 1).build(&ctx.state(), None).await.unwrap();
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
    let mut post: Vec<String> = Vec::new();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for b in &batches {
        let kind = arrow::compute::cast(b.column_by_name("_change_type").unwrap(), &DataType::Utf8).unwrap();
        let kind = kind.as_any().downcast_ref::<StringArray>().unwrap();
        let id = arrow::compute::cast(b.column_by_name("agent_id").unwrap(), &DataType::Utf8).unwrap();
        let id = id.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            *kinds.entry(kind.value(i).to_string()).or_default() += 1;
            if kind.value(i) == "update_postimage" {
                post.push(id.value(i).to_string());
            }
        }
    }
    post.sort();
    assert_eq!(post, changed, "exactly the three changed wallets: {kinds:?}");
    assert_eq!(kinds.get("insert"), None);
    assert_eq!(kinds.get("delete"), None);
}

#[tokio::test]
async fn a_row_updated_during_paging_is_present_with_its_latest_value() {
    let sb = sandbox(200).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    // 21 pages of 10, each slowed down, so changes land while the sync pages.
    for _ in 0..25 {
        sb.faults().inject_next("/api/wallets", None, Some(Duration::from_millis(60)));
    }
    let opts = SyncOptions { page_size: 10, ..SyncOptions::default() };
    let (cm, progress) = (commit("p"), Progress::hidden());
    let sync = sync_table::<Wallet>(&c, &wh, &cm, &opts, &progress);
    let before = sb.stats().requests;
    let change = async {
        // The 4th page asked for: three answered, past agent-000001 (seeded first); 18 to go.
        until("three pages answered", Duration::from_secs(60), || sb.stats().requests >= before + 4).await;
        let mut l = sb.ledger();
        l.payout("agent-000001", usd("11.11"), "during paging", None).unwrap(); // already paged past
        l.payout("agent-000200", usd("22.22"), "during paging", None).unwrap(); // not reached yet
    };
    let (r, ()) = tokio::join!(sync, change);
    let r = r.unwrap();
    assert!(r.rows_read > 201, "the changed rows were listed again: {r}");
    assert_tables_equal_api_wallets_only(&sb, &wh).await;
}

async fn assert_tables_equal_api_wallets_only(sb: &Sandbox, wh: &Warehouse) {
    let wallets =
        table_as_text(wh, "SELECT agent_id, CAST(balance_usd AS DECIMAL(18,2)) FROM purpleflea.agents.wallets").await;
    let l = sb.ledger();
    assert_eq!(wallets.len(), l.agent_count());
    for w in l.wallets() {
        assert_eq!(wallets[&w.agent_id], w.balance_usd.to_string(), "{}", w.agent_id);
    }
}

#[tokio::test]
async fn a_crash_between_pages_then_a_rerun_leaves_every_table_equal_to_the_api() {
    let sb = sandbox(120).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let crashing = SyncOptions { page_size: 10, batch_rows: 25, fail_after_pages: Some(7), ..SyncOptions::default() };
    for step in 0..3 {
        let e = sync_all(&c, &wh, &crashing).await.unwrap_err();
        assert!(matches!(e, SyncError::Injected { .. }), "{e}");
        // The world moves on between attempts.
        sb.ledger().payout(&format!("agent-{:06}", 10 + step), usd("1.50"), "between crashes", None).unwrap();
    }
    // Crash each table part-way in turn: wallets crash first, so force later tables through too.
    let p = Progress::hidden();
    let _ = sync_table::<Escrow>(
        &c,
        &wh,
        &commit("e"),
        &SyncOptions { page_size: 2, batch_rows: 3, fail_after_pages: Some(2), ..SyncOptions::default() },
        &p,
    )
    .await;
    let _ = sync_table::<Transaction>(&c, &wh, &commit("t"), &crashing, &p).await;
    sync_all(&c, &wh, &SyncOptions { page_size: 10, batch_rows: 25, ..SyncOptions::default() }).await.unwrap();
    assert_tables_equal_api(&sb, &wh).await;
}

#[tokio::test]
async fn two_syncs_at_once_leave_the_tables_correct() {
    let sb = sandbox(300).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let opts = SyncOptions { page_size: 50, batch_rows: 60, ..SyncOptions::default() };
    let (a, b) = tokio::join!(sync_all(&c, &wh, &opts), sync_all(&c, &wh, &opts));
    a.unwrap();
    b.unwrap();
    assert_tables_equal_api(&sb, &wh).await;
    // And again, with changes, racing incremental syncs.
    for i in 1..=20 {
        sb.ledger().payout(&format!("agent-{i:06}"), usd("0.10"), "race", None).unwrap();
    }
    let (a, b) = tokio::join!(sync_all(&c, &wh, &opts), sync_all(&c, &wh, &opts));
    a.unwrap();
    b.unwrap();
    assert_tables_equal_api(&sb, &wh).await;
}

#[tokio::test]
async fn incremental_reads_from_the_stored_position_and_appends_each_transaction_once() {
    let sb = sandbox(80).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    sync_all(&c, &wh, &SyncOptions::default()).await.unwrap();
    for i in 1..=4 {
        sb.ledger().payout(&format!("agent-{i:06}"), usd("2"), "incr", Some(&format!("k-{i}"))).unwrap();
    }
    // No overlap: only what changed is read, plus the row at the stored position itself (`since` is
    // inclusive), which is recognised as already held.
    let tight = SyncOptions { overlap: Duration::ZERO, ..SyncOptions::default() };
    let r = sync_table::<Transaction>(&c, &wh, &commit("t"), &tight, &Progress::hidden()).await.unwrap();
    assert_eq!((r.rows_read, r.inserted, r.unchanged), (5, 4, 1), "{r}");
    let r = sync_table::<Wallet>(&c, &wh, &commit("w"), &tight, &Progress::hidden()).await.unwrap();
    // (Several wallets can share the position's timestamp: one escrow touches buyer and seller at once.)
    assert_eq!((r.updated, r.rows_read - r.unchanged), (4, 4), "{r}");
    assert!(r.unchanged >= 1, "{r}");
    // With the default 5-minute overlap everything seeded seconds ago is read again, and nothing doubles.
    sb.ledger().payout("agent-000005", usd("2"), "incr", None).unwrap();
    let r =
        sync_table::<Transaction>(&c, &wh, &commit("t"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    assert_eq!(r.inserted, 1, "{r}");
    assert!(r.unchanged > 80, "{r}");
    sync_all(&c, &wh, &SyncOptions::default()).await.unwrap();
    assert_tables_equal_api(&sb, &wh).await;
    // Every commit carries the run id for DESCRIBE HISTORY.
    let t = open_existing(&wh, &TRANSACTIONS).await.unwrap().unwrap();
    let history: Vec<_> = t.history(None).try_collect().await.unwrap();
    assert!(history.iter().all(|h| h.info.contains_key("pfsync.run_id")), "{history:?}");
}

#[tokio::test]
async fn full_refresh_touches_every_listed_row_and_keeps_vanished_ones() {
    // A stand-in API whose listing loses one wallet between runs (the sandbox never deletes agents).
    let server = drift::Server::start().await;
    let c = server.client();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    server.set_wallets(vec![drift::wallet("a1", "1.00"), drift::wallet("a2", "2.00"), drift::wallet("a3", "3.00")]);
    sync_table::<Wallet>(&c, &wh, &commit("1"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    server.set_wallets(vec![drift::wallet("a1", "1.00"), drift::wallet("a3", "3.50")]);
    let full = SyncOptions { full: true, ..SyncOptions::default() };
    let r = sync_table::<Wallet>(&c, &wh, &commit("2"), &full, &Progress::hidden()).await.unwrap();
    assert_eq!((r.updated, r.missing), (2, 1), "{r}");
    let t = table_as_text(&wh, "SELECT agent_id, balance_usd FROM purpleflea.agents.wallets").await;
    assert_eq!(t.len(), 3, "a2 is kept");
    assert_eq!(t["a3"].parse::<f64>().unwrap(), 3.5);
    let stale = table_as_text(
        &wh,
        "SELECT agent_id FROM purpleflea.agents.wallets WHERE last_synced_at < (SELECT max(last_synced_at) FROM purpleflea.agents.wallets)",
    )
    .await;
    assert_eq!(stale.keys().collect::<Vec<_>>(), vec!["a2"], "the vanished row keeps an old last_synced_at");
}

#[tokio::test]
async fn schema_drift_fails_only_the_bad_rows_and_names_field_and_id() {
    let server = drift::Server::start().await;
    let c = server.client();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let mut extra = drift::wallet("ok-1", "1.00");
    extra["brand_new_field"] = serde_json::json!("ignored");
    let mut missing = drift::wallet("bad-missing", "1.00");
    missing.as_object_mut().unwrap().remove("balance_usd");
    let mut mistyped = drift::wallet("bad-type", "1.00");
    mistyped["active_escrow_count"] = serde_json::json!("three");
    server.set_wallets(vec![extra, missing, mistyped, drift::wallet("ok-2", "2.00")]);
    let r = sync_table::<Wallet>(&c, &wh, &commit("d"), &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    assert_eq!((r.rows_read, r.inserted, r.failed), (4, 2, 2), "{r}");
    let t = table_as_text(&wh, "SELECT agent_id, balance_usd FROM purpleflea.agents.wallets").await;
    let mut keys: Vec<_> = t.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["ok-1", "ok-2"]);
    // The errors name the field and the row.
    let page: pfsync::provider::records::Page<pfsync::provider::records::Wallet> =
        c.list(&Default::default()).await.unwrap();
    let errors: Vec<String> = page.rows.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    assert!(errors.iter().any(|e| e.contains("bad-missing") && e.contains("balance_usd")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("bad-type") && e.contains("active_escrow_count")), "{errors:?}");
    assert_eq!(page.unknown_fields, vec!["brand_new_field".to_string()]);
}

#[tokio::test]
async fn escrows_table_follows_escrow_state() {
    let sb = sandbox(60).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    sync_all(&c, &wh, &SyncOptions::default()).await.unwrap();
    let funded: Vec<String> = sb
        .ledger()
        .escrows()
        .filter(|e| e.status == pfsync::provider::records::EscrowStatus::Funded)
        .map(|e| e.escrow_id.clone())
        .collect();
    assert!(!funded.is_empty());
    sb.ledger().escrow_settle(&funded[0], "passed", true, None).unwrap();
    let reports = sync_all(&c, &wh, &SyncOptions::default()).await.unwrap();
    let r = reports.iter().find(|r| r.table == ESCROWS.name).unwrap();
    assert_eq!((r.inserted, r.updated), (0, 1), "{r}");
    assert_tables_equal_api(&sb, &wh).await;
    let meta = table_as_text(&wh, "SELECT escrow_id, metadata FROM purpleflea.agents.escrows").await;
    let m: serde_json::Value = serde_json::from_str(&meta[&funded[0]]).unwrap();
    assert_eq!(m["source"], "sandbox-seed");
    let _: HashSet<String> = HashSet::new();
}

/// A minimal stand-in API serving crafted wallet pages: drifted fields, vanished rows.
mod drift {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::routing::get;
    use pfsync::http::ClientConfig;
    use pfsync::provider::seed::SeedClient as Client;
    use serde_json::{Value, json};

    pub fn wallet(id: &str, balance: &str) -> Value {
        json!({
            "agent_id": id, "wallet_address": "0xabc", "balance_usd": balance.parse::<f64>().unwrap(),
            "active_escrow_count": 0, "total_earned_usd": 5, "referral_code": "R",
            "registered_at": "2026-01-01T00:00:00Z", "updated_at": chrono::Utc::now().to_rfc3339()
        })
    }

    pub struct Server {
        rows: Arc<Mutex<Vec<Value>>>,
        url: url::Url,
        _task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        pub async fn start() -> Server {
            let rows = Arc::new(Mutex::new(Vec::new()));
            let app = axum::Router::new()
                .route(
                    "/api/wallets",
                    get(|State(rows): State<Arc<Mutex<Vec<Value>>>>| async move {
                        let data = rows.lock().unwrap().clone();
                        axum::Json(json!({"data": data, "next_cursor": null}))
                    }),
                )
                .with_state(rows.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = url::Url::parse(&format!("http://{}/api", listener.local_addr().unwrap())).unwrap();
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Server { rows, url, _task: task }
        }

        pub fn set_wallets(&self, rows: Vec<Value>) {
            *self.rows.lock().unwrap() = rows;
        }

        pub fn client(&self) -> Client {
            crate::common::seed_client(ClientConfig::new(self.url.clone(), pfsync::sandbox::default_key()))
        }
    }
}
