//! The S3 path for real: a local S3-compatible server (moto, from PyPI, which `.ci/run` installs) started
//! by the test on 127.0.0.1, every table written and read back through delta-rs's S3 backend. The tests
//! build pfsync with the `unity` feature (and so `s3`); without moto they skip, and fail under `CI=true`
//! or `PFSYNC_REQUIRE_MOTO=1`.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pfsync::payouts::{PayoutOptions, run_payouts};
use pfsync::progress::Progress;
use pfsync::provider::records::{Escrow, Transaction, Wallet};
use pfsync::reconcile::{ReconcileOptions, reconcile};
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{ALL, CommitInfo, Warehouse, sql_context};

use crate::common::{Missing, PaidBy, PfsyncCommand, assert_paid_once, client, pfsync, sandbox};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_written_and_read_back_on_s3() {
    let bucket = "pfsync-test";
    let Some((_moto, endpoint)) = moto_with_bucket(bucket).await else { return };

    let options: HashMap<String, String> = [
        ("aws_endpoint_url", endpoint.as_str()),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let wh = Warehouse::new(url::Url::parse(&format!("s3://{bucket}/lake/")).unwrap(), BTreeMap::new(), options);
    assert!(!format!("{wh:?}").contains("\"test\""), "storage secrets are not printed");

    let sb = sandbox(40).await;
    let c = client(&sb);
    let p = Progress::hidden();
    let commit = CommitInfo { run_id: "s3-run".into(), step: "s3" };
    sync_table::<Wallet>(&c, &wh, &commit, &SyncOptions::default(), &p).await.unwrap();
    crate::payouts::write_pending(&wh, &[("s3-1", "agent-000001", "1.00", "r"), ("s3-2", "agent-000002", "2.50", "r")])
        .await;
    let r = run_payouts(
        &pfsync::provider::seed::SeedProvider::new(c.clone(), true),
        &wh,
        &commit,
        &PayoutOptions::default(),
        &p,
    )
    .await
    .unwrap();
    assert_eq!(r.completed, 2, "{r}");
    sync_table::<Wallet>(&c, &wh, &commit, &SyncOptions::default(), &p).await.unwrap();
    sync_table::<Escrow>(&c, &wh, &commit, &SyncOptions::default(), &p).await.unwrap();
    sync_table::<Transaction>(&c, &wh, &commit, &SyncOptions::default(), &p).await.unwrap();
    let rec = reconcile(&wh, &commit, &ReconcileOptions::default()).await.unwrap();
    assert_eq!(rec.open().count(), 0);
    crate::common::record_step(&wh, "s3-run", "s3", 1, 0).await;

    // Every table this flow writes exists on S3 and reads back through SQL; the others are not created.
    let ctx = sql_context(&wh).await.unwrap();
    // Source tables upstream jobs own: pfsync never creates one at run time (`pfsync init` does).
    let sources = ["purpleflea.escrow.actions", "purpleflea.escrow.rules"];
    // Tables other flows fill (the live provider's ledger, the rules step, the MCP server's audit): empty here if created.
    let other_flows = [
        "purpleflea.agents.escrow_terms",
        "purpleflea.escrow.rule_sightings",
        "purpleflea.ledger.entries",
        "purpleflea.ledger.gaps",
        "purpleflea.ops.mcp_calls",
    ];
    for spec in ALL {
        let exists = pfsync::tables::open_existing(&wh, spec).await.unwrap().is_some();
        if sources.contains(&spec.name) {
            assert!(!exists, "{} was created", spec.name);
            continue;
        }
        if other_flows.contains(&spec.name) {
            if exists {
                let n = crate::common::count(&ctx, &format!("SELECT count(*) FROM {}", spec.name)).await;
                println!("{} {n} rows on s3 (another flow's table)", spec.name);
            }
            continue;
        }
        let n = crate::common::count(&ctx, &format!("SELECT count(*) FROM {}", spec.name)).await;
        println!("{} {n} rows on s3", spec.name);
        // Nothing in this flow writes rejects or findings; the tables are there, empty.
        let may_be_empty = ["purpleflea.payouts.rejects", "purpleflea.payouts.reconciliation"];
        assert!(n > 0 || may_be_empty.contains(&spec.name), "{} has rows on s3", spec.name);
    }
}

/// Two writers at once on S3, with delta-rs's default commit (a conditional put, no lock, no unsafe rename):
/// both append to the payout log concurrently, and no commit overwrites another. A lost commit would leave
/// an operation paid at the provider without its `completed` row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_s3_lose_no_commit() {
    let bucket = "pfsync-two";
    let Some((_moto, endpoint)) = moto_with_bucket(bucket).await else { return };
    let storage = [
        ("aws_endpoint_url", endpoint.as_str()),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pfsync.toml");
    let body: String = storage.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect();
    std::fs::write(&config, format!("[storage]\n{body}")).unwrap();
    let root = format!("s3://{bucket}/lake/");
    let options = storage.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let wh = Warehouse::new(url::Url::parse(&root).unwrap(), BTreeMap::new(), options);

    let sb = sandbox(50).await;
    let rows = crate::payouts::n_payouts(120, "s3c");
    crate::payouts::write_pending(&wh, &crate::payouts::as_refs(&rows)).await;
    let cmd = || {
        let mut c = pfsync();
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
    let ctx = sql_context(&wh).await.unwrap();
    let n = crate::common::count(
        &ctx,
        "SELECT count(DISTINCT operation_id) FROM purpleflea.payouts.log WHERE event = 'completed'",
    )
    .await;
    assert_eq!(n, 120, "every payout's completed row survived the concurrent commits");
}
