//! Table locations from Unity Catalog (`--features unity`), end to end: the `pfsync` binary asks a Unity
//! Catalog REST server (a small stand-in on 127.0.0.1 speaking the `/api/2.1/unity-catalog` routes delta-rs
//! calls) where each table lives, then writes there. The binary must have the `unity` feature: the wheel's,
//! or `PFSYNC_CLOUD_BIN` (see tests/it/s3.rs); ignored in a plain `cargo test`, `.ci/run` runs them after
//! the wheel's build: `PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored unity::`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::common::{PfsyncCommand, sandbox, text};

const TOKEN: &str = "dapi-UNITYSECRET-0123";

#[derive(Default)]
struct Catalog {
    /// Full name -> storage location.
    tables: BTreeMap<String, String>,
    /// Full names the catalog lists as MANAGED tables (every other one is EXTERNAL).
    managed: Vec<String>,
    /// Authorization headers seen, and the operations credentials were asked for, as `table:operation`.
    auth: Vec<String>,
    vended: Vec<String>,
}

type Shared = Arc<Mutex<Catalog>>;

async fn get_table(State(c): State<Shared>, UrlPath(full): UrlPath<String>, h: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut c = c.lock().unwrap();
    c.auth.push(h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string());
    let Some(location) = c.tables.get(&full) else {
        let message = format!("Table '{full}' does not exist.");
        return (StatusCode::NOT_FOUND, Json(json!({"error_code": "TABLE_DOES_NOT_EXIST", "message": message})));
    };
    let parts: Vec<&str> = full.split('.').collect();
    let body = json!({
        "name": parts[2], "catalog_name": parts[0], "schema_name": parts[1],
        "table_type": if c.managed.contains(&full) { "MANAGED" } else { "EXTERNAL" },
        "data_source_format": "DELTA", "columns": [], "properties": {},
        "storage_location": location, "created_at": 1_764_000_000_000i64, "updated_at": 1_764_000_000_000i64,
        "table_id": format!("id-{full}"),
    });
    (StatusCode::OK, Json(body))
}

async fn credentials(State(c): State<Shared>, Json(req): Json<Value>) -> Json<Value> {
    let table = req["table_id"].as_str().unwrap_or_default().trim_start_matches("id-");
    let op = format!("{table}:{}", req["operation"].as_str().unwrap_or_default());
    c.lock().unwrap().vended.push(op);
    Json(json!({
        "aws_temp_credentials": {"access_key_id": "vended-id", "secret_access_key": "vended-secret", "session_token": "t"},
        "expiration_time": 4_102_444_800_000i64,
        "url": "s3://unused/",
    }))
}

async fn start_catalog(tables: BTreeMap<String, String>) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Catalog { tables, ..Catalog::default() }));
    let app = Router::new()
        .route("/api/2.1/unity-catalog/tables/{full}", get(get_table))
        .route("/api/2.1/unity-catalog/temporary-table-credentials", post(credentials))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// Every table pfsync owns registered at `<root>/uc/<table>/`, except those in `missing`.
fn registered(root: &Path, missing: &[&str]) -> BTreeMap<String, String> {
    pfsync::tables::ALL
        .iter()
        .filter(|s| !missing.contains(&s.name))
        .map(|s| {
            let dir = root.join("uc").join(s.name);
            (s.name.to_string(), url::Url::from_directory_path(dir).unwrap().to_string())
        })
        .collect()
}

async fn pfsync(bin: &Path, root: &Path, config: &str, api: &str, args: &[&str]) -> Output {
    let cfg = root.join("pfsync.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut c = crate::common::pfsync_at(bin);
    c.config(&cfg).warehouse(root.join("wh")).provider(api, "pf_test_sandbox").arg("-v").args(args);
    c.env("DATABRICKS_TOKEN", TOKEN);
    tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pfsync built with unity: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored unity::"]
async fn tables_live_where_unity_catalog_says_and_the_token_stays_secret() {
    let Some(bin) = crate::wheel::cloud_pfsync() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(20).await;
    let api = sb.base_url().to_string();
    let (uc, state) = start_catalog(registered(dir.path(), &[])).await;

    let config = format!("[unity]\nworkspace_url = \"{uc}\"\n");
    let out = pfsync(&bin, dir.path(), &config, &api, &["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let wallets = dir.path().join("uc/purpleflea.agents.wallets/_delta_log");
    assert!(wallets.is_dir(), "the wallets table is at the catalog's location: {}", text(&out));
    assert!(!dir.path().join("wh/purpleflea").exists(), "nothing at the warehouse default");
    assert!(!text(&out).contains(TOKEN) && !text(&out).contains("vended-secret"), "no secret in output");
    {
        let c = state.lock().unwrap();
        assert!(c.auth.iter().all(|a| a == &format!("Bearer {TOKEN}")), "the token from DATABRICKS_TOKEN is sent");
        // READ for the tables upstream jobs write and pfsync only reads, READ_WRITE for the rest.
        for spec in pfsync::tables::ALL {
            let op = if spec.pfsync_writes() { "READ_WRITE" } else { "READ" };
            assert!(c.vended.contains(&format!("{}:{op}", spec.name)), "{}: {:?}", spec.name, c.vended);
        }
        assert_eq!(c.vended.len() % pfsync::tables::ALL.len(), 0, "one kind per table: {:?}", c.vended);
    }

    // A mapping in [tables] wins over the catalog, and vending can be turned off.
    let mapped = dir.path().join("mapped-runs");
    let config = format!(
        "[unity]\nworkspace_url = \"{uc}\"\nvend_credentials = false\n[tables.\"purpleflea.ops.runs\"]\nlocation = \"{}\"\n",
        mapped.display()
    );
    let vended_before = state.lock().unwrap().vended.len();
    let out = pfsync(&bin, dir.path(), &config, &api, &["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(mapped.join("_delta_log").is_dir(), "the [tables] mapping is used: {}", text(&out));
    assert_eq!(state.lock().unwrap().vended.len(), vended_before, "no credentials asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pfsync built with unity: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored unity::"]
async fn an_s3_location_from_the_catalog_is_written_with_the_credentials_it_vends() {
    let Some(bin) = crate::wheel::cloud_pfsync() else { return };
    let Some((_moto, endpoint)) = crate::s3::moto_with_bucket("uc-bucket").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(10).await;
    let api = sb.base_url().to_string();
    let tables = pfsync::tables::ALL.iter().map(|s| (s.name.to_string(), format!("s3://uc-bucket/managed/{}", s.name)));
    let (uc, state) = start_catalog(tables.collect()).await;
    // The endpoint and region are shared storage options; the keys come from the catalog, per table.
    let config = format!(
        "[unity]\nworkspace_url = \"{uc}\"\n[storage]\naws_endpoint_url = \"{endpoint}\"\naws_region = \"us-east-1\"\n\
         aws_allow_http = \"true\"\n"
    );
    let out = pfsync(&bin, dir.path(), &config, &api, &["sync", "wallets"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("vended-secret"));
    assert!(!state.lock().unwrap().vended.is_empty());
    let listing =
        reqwest::get(format!("{endpoint}/uc-bucket?list-type=2&prefix=managed/purpleflea.agents.wallets/_delta_log/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(
        listing.contains("00000000000000000000.json"),
        "the wallets table is on S3 where the catalog said: {listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pfsync built with unity: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored unity::"]
async fn an_unregistered_table_or_an_insecure_catalog_stops_the_run_before_anything_is_touched() {
    let Some(bin) = crate::wheel::cloud_pfsync() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(5).await;
    let api = sb.base_url().to_string();
    let (uc, _state) = start_catalog(registered(dir.path(), &["purpleflea.payouts.log"])).await;

    let out = pfsync(&bin, dir.path(), &format!("[unity]\nworkspace_url = \"{uc}\"\n"), &api, &["payouts"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("purpleflea.payouts.log") && msg.contains("sql/ddl/purpleflea.payouts.log.sql"), "{msg}");
    assert!(!dir.path().join("uc").exists() && !dir.path().join("wh").exists(), "nothing touched");

    // A managed table is refused as a write target, before anything is touched; as a source it is read.
    let (uc, state) = start_catalog(registered(dir.path(), &[])).await;
    state.lock().unwrap().managed = vec!["purpleflea.payouts.log".into(), "purpleflea.payouts.pending".into()];
    let out = pfsync(&bin, dir.path(), &format!("[unity]\nworkspace_url = \"{uc}\"\n"), &api, &["payouts"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("purpleflea.payouts.log is not an external table") && msg.contains("MANAGED"), "{msg}");
    assert!(!msg.contains("purpleflea.payouts.pending is not"), "a managed source is fine: {msg}");
    assert!(!dir.path().join("uc").exists() && !dir.path().join("wh").exists(), "nothing touched");

    let out = pfsync(&bin, dir.path(), "[unity]\nworkspace_url = \"http://uc.example.com\"\n", &api, &["sync"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("must be https"), "{}", text(&out));
    assert!(!text(&out).contains(TOKEN));
}
