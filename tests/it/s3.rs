//! The S3 path for real: a local S3-compatible server (moto, from PyPI, which `.ci/run` installs) started
//! by the test on 127.0.0.1, every table written and read back through delta-rs's S3 backend by a `pfsync`
//! built with the cloud features: the wheel's (`PFSYNC_WHEEL`, as `.ci/run` runs these after building it),
//! or any `cargo build --features unity` binary named by `PFSYNC_CLOUD_BIN`. The test build itself stays
//! local-only (no AWS SDK to compile twice), so these are ignored in a plain `cargo test`:
//! `PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored s3:: unity::`. Without moto or
//! the binary they skip, and fail under `CI=true`, `PFSYNC_REQUIRE_MOTO=1` or `PFSYNC_REQUIRE_WHEEL=1`.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use pfsync::tables::Warehouse;

use crate::common::{Missing, PaidBy, PfsyncCommand, assert_paid_once, sandbox, text};

pub struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `python3` can import moto's server; a missing python3 or moto is [`Missing`].
fn moto_installed() -> Result<(), Missing> {
    let found = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    Err(Missing {
        what: "no moto server for python3".into(),
        fix: "python3 -m pip install 'moto[server]', as .ci/run does".into(),
        require: "PFSYNC_REQUIRE_MOTO",
    })
}

async fn start_moto() -> (Moto, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // `python3 -m moto.server` needs only python3 on PATH (pip's script directory may not be).
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 not found (the S3 test runs moto's server: `pip install 'moto[server]'`, as .ci/run does)");
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(&endpoint).await.is_ok() {
            return (moto, endpoint);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto's server did not come up on {endpoint}: is it installed? `pip install 'moto[server]'`");
}

/// A moto server with one empty bucket: the server (stopped on drop) and its endpoint; `None` (the test
/// skips) when moto is not installed and nothing requires it.
pub async fn moto_with_bucket(bucket: &str) -> Option<(Moto, String)> {
    if let Err(missing) = moto_installed() {
        return missing.skip_or_fail();
    }
    let (moto, endpoint) = start_moto().await;
    let r = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket {bucket}: {}", r.status());
    Some((moto, endpoint))
}

/// `[storage]` for the moto server at `endpoint`, with a secret that must never be printed.
fn storage_config(endpoint: &str) -> String {
    format!(
        "[storage]\naws_endpoint_url = \"{endpoint}\"\naws_access_key_id = \"test\"\n\
         aws_secret_access_key = \"{SECRET}\"\naws_region = \"us-east-1\"\naws_allow_http = \"true\"\n"
    )
}

const SECRET: &str = "s3-SECRET-never-printed-5f1e";

/// Pending payouts upstream wrote: a local table (the only one off S3), mapped in the config by location.
async fn local_pending(dir: &Path, rows: &[(&str, &str, &str, &str)]) -> String {
    let local = dir.join("upstream");
    crate::payouts::write_pending(&Warehouse::local(&local).unwrap(), rows).await;
    let pending = local.join("purpleflea/payouts/pending");
    let url = url::Url::from_directory_path(pending).unwrap();
    format!("[tables.\"purpleflea.payouts.pending\"]\nlocation = \"{url}\"\n")
}

async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap()
}

/// `pfsync sql` on the warehouse: the rows as JSON.
async fn sql(bin: &Path, root: &str, config: &Path, query: &str) -> Vec<Value> {
    let mut c = crate::common::pfsync_at(bin);
    c.warehouse(root).config(config).args(["sql", "--output", "json", query]);
    let out = run(c).await;
    assert!(out.status.success(), "{query}: {}", text(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pfsync built with unity: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored s3::"]
async fn every_table_is_written_and_read_back_on_s3() {
    let Some(bin) = crate::wheel::cloud_pfsync() else { return };
    let bucket = "pfsync-test";
    let Some((_moto, endpoint)) = moto_with_bucket(bucket).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(40).await;
    let rows = [("s3-1", "agent-000001", "1.00", "r"), ("s3-2", "agent-000002", "2.50", "r")];
    let pending = local_pending(dir.path(), &rows).await;
    let config = dir.path().join("pfsync.toml");
    std::fs::write(&config, format!("{}{pending}", storage_config(&endpoint))).unwrap();
    let root = format!("s3://{bucket}/lake/");

    // The whole job on S3: sync, the two payouts, the ledger, reconciliation, the run's records.
    let mut c = crate::common::pfsync_at(&bin);
    c.sandbox(&sb).warehouse(&root).config(&config).args(["-v", "run"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "storage secrets are not printed: {}", text(&out));
    assert_paid_once(&sb, PaidBy::Key, &["s3-1", "s3-2"], "one run on S3");
    let open = "SELECT count(*) AS n FROM purpleflea.payouts.reconciliation WHERE resolved_at IS NULL";
    assert_eq!(sql(&bin, &root, &config, open).await[0]["n"], 0, "nothing open after the run");

    // Every table this flow writes exists on S3, with rows; the others are not created.
    let mut c = crate::common::pfsync_at(&bin);
    c.warehouse(&root).config(&config).args(["tables", "--output", "json"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    let tables: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tables.len(), pfsync::tables::ALL.len());
    // Source tables upstream jobs own: pfsync never creates one at run time (`pfsync init` does).
    let sources = ["purpleflea.escrow.actions", "purpleflea.escrow.rules"];
    // Tables other flows fill (the live provider's ledger, the rules step, the MCP server's audit).
    let other_flows = [
        "purpleflea.agents.escrow_terms",
        "purpleflea.escrow.rule_sightings",
        "purpleflea.ledger.entries",
        "purpleflea.ledger.gaps",
        "purpleflea.ops.mcp_calls",
    ];
    // Nothing in this flow writes rejects or findings; the tables are there, empty.
    let may_be_empty = ["purpleflea.payouts.rejects", "purpleflea.payouts.reconciliation"];
    for t in &tables {
        let name = t["table"].as_str().unwrap();
        let (created, rows) = (t["created"] == true, t["rows"].as_u64().unwrap_or(0));
        println!("{name}: created {created}, {rows} rows, at {}", t["location"]);
        if name == "purpleflea.payouts.pending" {
            assert!(t["location"].as_str().unwrap().starts_with("file://"), "the mapped local table: {t}");
        } else if sources.contains(&name) {
            assert!(!created, "{name} was created");
        } else if !other_flows.contains(&name) {
            assert!(t["location"].as_str().unwrap().starts_with(&root), "{name} on S3: {t}");
            assert!(created && (rows > 0 || may_be_empty.contains(&name)), "{name} has rows on S3: {t}");
        }
    }
    // And SQL reads them back from S3, as many rows as the log says.
    let wallets = sql(&bin, &root, &config, "SELECT count(*) AS n FROM purpleflea.agents.wallets").await;
    let listed = tables.iter().find(|t| t["table"] == "purpleflea.agents.wallets").unwrap();
    assert!(wallets[0]["n"].as_u64().unwrap() >= 40, "every agent's wallet: {wallets:?}");
    assert_eq!(wallets[0]["n"], listed["rows"]);
}

/// Two writers at once on S3, with delta-rs's default commit (a conditional put, no lock, no unsafe rename):
/// both append to the payout log concurrently, and no commit overwrites another. A lost commit would leave
/// an operation paid at the provider without its `completed` row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pfsync built with unity: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored s3::"]
async fn two_writers_on_s3_lose_no_commit() {
    let Some(bin) = crate::wheel::cloud_pfsync() else { return };
    let bucket = "pfsync-two";
    let Some((_moto, endpoint)) = moto_with_bucket(bucket).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let rows = crate::payouts::n_payouts(120, "s3c");
    let pending = local_pending(dir.path(), &crate::payouts::as_refs(&rows)).await;
    let config = dir.path().join("pfsync.toml");
    std::fs::write(&config, format!("{}{pending}", storage_config(&endpoint))).unwrap();
    let root = format!("s3://{bucket}/lake/");

    let sb = sandbox(50).await;
    let cmd = || {
        let mut c = crate::common::pfsync_at(&bin);
        c.sandbox(&sb)
            .arg("-q")
            .warehouse(&root)
            .config(&config)
            .args(["payouts", "--batch-size", "10", "--no-agent-check"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let (a, b) = tokio::task::block_in_place(|| {
        let a = cmd().spawn().unwrap();
        let b = cmd().spawn().unwrap();
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    });
    for o in [&a, &b] {
        // Either may meet the other's request in flight (409, exit 6); the rerun below settles it.
        assert!(matches!(o.status.code(), Some(0) | Some(6)), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let again = tokio::task::block_in_place(|| cmd().output().unwrap());
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "two writers on S3 at once");
    let completed = "SELECT count(DISTINCT operation_id) AS n FROM purpleflea.payouts.log WHERE event = 'completed'";
    let n = sql(&bin, &root, &config, completed).await;
    assert_eq!(n[0]["n"], 120, "every payout's completed row survived the concurrent commits");
}
