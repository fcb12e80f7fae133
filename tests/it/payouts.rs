//! Payouts and escrow actions: exactly once against the sandbox's own ledger, whatever happens.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray};
use pfsync::payouts::{PayoutOptions, PayoutReport};
use pfsync::progress::Progress;
use pfsync::provider::seed::SeedClient as Client;
use pfsync::sandbox::{Fault, ORCHESTRATOR_AGENT, Sandbox, SandboxConfig};
use pfsync::tables::{CommitInfo, ESCROW_ACTIONS, PENDING_PAYOUTS, Warehouse, open_or_create, sql_context};

use crate::common::{
    Later, PaidBy, PfsyncCommand, assert_paid_once, client, client_config, later_clock, paid_per, pay_with, pfsync,
    sandbox, warehouse,
};

/// A pending payout: (payout_id, agent_id, amount, reason).
pub type PendingRow<'a> = (&'a str, &'a str, &'a str, &'a str);
/// An escrow action: (action_id, action, escrow_id, create_action_id, seller, amount, reason).
pub type ActionRow<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str, &'a str, &'a str);

/// Rows for purpleflea.payouts.pending.
pub async fn write_pending(wh: &Warehouse, rows: &[PendingRow<'_>]) {
    let commit = CommitInfo { run_id: "upstream".into(), step: "test" };
    let table = open_or_create(wh, &PENDING_PAYOUTS, &commit).await.unwrap();
    let s = |f: &dyn Fn(&PendingRow<'_>) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let amounts: Decimal128Array = rows
        .iter()
        .map(|r| Some(pfsync::money::Usd::parse(r.2).unwrap().to_decimal128()))
        .collect::<Decimal128Array>()
        .with_precision_and_scale(18, 2)
        .unwrap();
    let n = rows.len();
    let columns: Vec<ArrayRef> = vec![
        s(&|r| Some(r.0.to_string())),
        s(&|r| Some(r.1.to_string())),
        Arc::new(amounts),
        s(&|r| Some(r.3.to_string())),
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![None; n]).with_timezone("UTC")),
        s(&|_| Some("tests".to_string())),
    ];
    let batch = RecordBatch::try_new(PENDING_PAYOUTS.arrow_schema(), columns).unwrap();
    table.write(vec![batch]).await.unwrap();
}

/// Rows for purpleflea.escrow.actions.
pub async fn write_actions(wh: &Warehouse, rows: &[ActionRow<'_>]) {
    write_actions_by(wh, ORCHESTRATOR_AGENT, rows).await
}

/// Rows for purpleflea.escrow.actions whose creates are funded by `buyer`.
pub async fn write_actions_by(wh: &Warehouse, buyer: &str, rows: &[ActionRow<'_>]) {
    let commit = CommitInfo { run_id: "upstream".into(), step: "test" };
    let table = open_or_create(wh, &ESCROW_ACTIONS, &commit).await.unwrap();
    let text = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(v.into_iter().collect::<StringArray>()) };
    let n = rows.len();
    let create = |r: &ActionRow<'_>| r.1 == "create";
    let columns: Vec<ArrayRef> = vec![
        text(rows.iter().map(|r| Some(r.0.to_string())).collect()),
        text(rows.iter().map(|r| Some(r.1.to_string())).collect()),
        text(rows.iter().map(|r| r.2.map(str::to_string)).collect()),
        text(rows.iter().map(|r| r.3.map(str::to_string)).collect()),
        text(rows.iter().map(|r| create(r).then(|| buyer.to_string())).collect()),
        text(rows.iter().map(|r| create(r).then(|| r.4.to_string())).collect()),
        Arc::new(
            rows.iter()
                .map(|r| create(r).then(|| pfsync::money::Usd::parse(r.5).unwrap().to_decimal128()))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(18, 2)
                .unwrap(),
        ),
        text(rows.iter().map(|r| create(r).then(|| format!("Data labeling task {}", r.0))).collect()),
        text(rows.iter().map(|r| create(r).then(|| format!(r#"{{"task_id":"{}"}}"#, r.0))).collect()),
        text(rows.iter().map(|r| Some(r.6.to_string())).collect()),
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![None; n]).with_timezone("UTC")),
        text(vec![Some("tests".to_string()); n]),
    ];
    let batch = RecordBatch::try_new(ESCROW_ACTIONS.arrow_schema(), columns).unwrap();
    table.write(vec![batch]).await.unwrap();
}

async fn pay(c: &Client, wh: &Warehouse, opts: &PayoutOptions) -> PayoutReport {
    pay_with(&pfsync::provider::seed::SeedProvider::new(c.clone(), true), wh, opts).await.unwrap()
}

pub fn n_payouts(n: usize, prefix: &str) -> Vec<(String, String, String, String)> {
    (1..=n)
        .map(|i| {
            (
                format!("{prefix}-{i}"),
                format!("agent-{:06}", 1 + i % 50),
                format!("{}.{:02}", i % 7 + 1, i % 100),
                format!("task-{i}"),
            )
        })
        .collect()
}

pub fn as_refs(v: &[(String, String, String, String)]) -> Vec<(&str, &str, &str, &str)> {
    v.iter().map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str())).collect()
}

#[tokio::test]
async fn pays_each_payout_once_and_a_rerun_pays_nothing() {
    let sb = sandbox(60).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(40, "p");
    write_pending(&wh, &as_refs(&rows)).await;
    let r = pay(&c, &wh, &PayoutOptions::default()).await;
    assert_eq!((r.completed, r.unknown, r.rejected_rows, r.log_commits), (40, 0, 0, 2), "{r}");
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "the first run");
    let executed = sb.stats().executed;
    let again = pay(&c, &wh, &PayoutOptions::default()).await;
    assert_eq!((again.completed, again.already_final, again.log_commits), (0, 40, 0), "{again}");
    assert_eq!(sb.stats().executed, executed, "a rerun sends nothing");
    // The status view agrees.
    let ctx = sql_context(&wh).await.unwrap();
    let sql = "SELECT count(*) FROM purpleflea.payouts.status WHERE status = 'completed' AND tx_id IS NOT NULL";
    assert_eq!(crate::common::count(&ctx, sql).await, 40);
}

#[tokio::test]
async fn every_bad_row_class_is_rejected_with_its_code_while_good_rows_are_paid() {
    let sb = sandbox(20).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let sql = r#"SELECT * FROM (VALUES
        ('good-1', 'agent-000001', CAST(12.5 AS DOUBLE), 'task-1'),
        ('neg', 'agent-000001', CAST(-5 AS DOUBLE), 'r'),
        ('zero', 'agent-000001', CAST(0 AS DOUBLE), 'r'),
        ('milli', 'agent-000001', CAST(0.001 AS DOUBLE), 'r'),
        ('nan', 'agent-000001', CAST('NaN' AS DOUBLE), 'r'),
        ('huge', 'agent-000001', CAST(1e300 AS DOUBLE), 'r'),
        ('', 'agent-000001', CAST(1 AS DOUBLE), 'r'),
        ('sql; DROP TABLE x', 'agent-000001', CAST(1 AS DOUBLE), 'r'),
        ('good-2', 'agent-00000\u{0430}', CAST(1 AS DOUBLE), 'r'),
        ('ghost', 'agent-999999', CAST(1 AS DOUBLE), 'r'),
        ('dup', 'agent-000002', CAST(1 AS DOUBLE), 'r'),
        ('dup', 'agent-000002', CAST(2 AS DOUBLE), 'r'),
        ('noreason', 'agent-000003', CAST(1 AS DOUBLE), NULL),
        ('long', 'agent-000003', CAST(1 AS DOUBLE), repeat('x', 10000000)),
        ('good-3', 'agent-000004', CAST(19.99 AS DOUBLE), 'task-3')
    ) AS t(payout_id, agent_id, amount_usd, reason)"#;
    // The wallets table must exist for the unknown-agent check.
    let sc = CommitInfo { run_id: "s".into(), step: "sync" };
    pfsync::sync::sync_table::<pfsync::provider::records::Wallet>(
        &c,
        &wh,
        &sc,
        &Default::default(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    let opts = PayoutOptions { payout_sql: Some(sql.into()), ..PayoutOptions::default() };
    let r = pay(&c, &wh, &opts).await;
    assert_eq!((r.completed, r.rejected_rows), (2, 12), "{r}");
    let ctx = sql_context(&wh).await.unwrap();
    let b = ctx
        .sql("SELECT coalesce(operation_id, '<null>'), code FROM purpleflea.payouts.rejects ORDER BY 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut codes: HashMap<String, String> = HashMap::new();
    for batch in &b {
        let ids = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let cs = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let cs = cs.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..batch.num_rows() {
            codes.insert(ids.value(i).to_string(), cs.value(i).to_string());
        }
    }
    let want = [
        ("neg", "invalid_amount"),
        ("zero", "invalid_amount"),
        ("milli", "invalid_amount"),
        ("nan", "invalid_amount"),
        ("huge", "invalid_amount"),
        ("", "invalid_id"),
        ("sql; DROP TABLE x", "invalid_id"),
        ("good-2", "invalid_agent_id"),
        ("ghost", "unknown_agent"),
        ("dup", "duplicate_id_conflict"),
        ("noreason", "missing_reason"),
        ("long", "field_too_long"),
    ];
    for (id, code) in want {
        assert_eq!(codes.get(id).map(String::as_str), Some(code), "{id}: {codes:?}");
    }
    assert_paid_once(&sb, PaidBy::Key, &["good-1", "good-3"], "the good rows");
    let paid = paid_per(&sb, PaidBy::Key);
    assert_eq!(paid.len(), 2, "nothing else moved");
}

#[tokio::test]
async fn an_id_reused_with_other_values_is_rejected_and_nothing_is_paid() {
    let sb = sandbox(5).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    write_pending(&wh, &[("p-1", "agent-000001", "1.00", "first")]).await;
    pay(&c, &wh, &PayoutOptions::default()).await;
    let sql = "SELECT 'p-1' AS payout_id, 'agent-000001' AS agent_id, CAST(2.00 AS DECIMAL(18,2)) AS amount_usd, 'first' AS reason";
    let r = pay(&c, &wh, &PayoutOptions { payout_sql: Some(sql.into()), ..PayoutOptions::default() }).await;
    assert_eq!((r.completed, r.rejected_rows), (0, 1), "{r}");
    assert_paid_once(&sb, PaidBy::Key, &["p-1"], "the first values only");
}

#[tokio::test]
async fn post_commit_failures_never_cause_a_second_payment() {
    let sb = sandbox(20).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(12, "f");
    write_pending(&wh, &as_refs(&rows)).await;
    for fault in [Fault::ErrorAfter, Fault::DropAfter, Fault::Malformed, Fault::ErrorAfter] {
        sb.faults().inject_next("/wallet/payout", Some(fault), None);
    }
    // No POST that may have run is sent again: their outcomes stay unknown, and the next run, once the
    // sends can no longer be running, resolves them by the same key.
    let r = pay(&client(&sb), &wh, &PayoutOptions::default()).await;
    assert_eq!((r.completed, r.unknown), (8, 4), "{r}");
    let later = PayoutOptions { clock: later_clock(600), ..PayoutOptions::default() };
    let r = pay(&client(&sb), &wh, &later).await;
    assert_eq!((r.completed, r.resolved_by_lookup, r.unknown), (4, 4, 0), "{r}");
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "faults after the commit");

    // Without client retries: outcomes stay unknown, and the next run resolves them by lookup.
    let more = n_payouts(6, "g");
    write_pending(&wh, &as_refs(&more)).await;
    for _ in 0..6 {
        sb.faults().inject_next("/wallet/payout", Some(Fault::DropAfter), None);
    }
    let mut cfg = client_config(&sb);
    cfg.retry.max_attempts = 1;
    let once = crate::common::seed_client(cfg);
    let r = pay(&once, &wh, &PayoutOptions::default()).await;
    assert_eq!(r.unknown, 6, "{r}");
    let r = pay(&client(&sb), &wh, &PayoutOptions::default()).await;
    assert_eq!((r.completed, r.resolved_by_lookup, r.unknown), (6, 6, 0), "{r}");
    let ids: Vec<String> = more.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "resolved by lookup");
}

#[tokio::test]
async fn the_safety_brake_stops_before_the_limit() {
    let sb = sandbox(10).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows: Vec<(String, String, String, String)> =
        (1..=10).map(|i| (format!("b-{i:02}"), "agent-000001".into(), "5.00".into(), "r".into())).collect();
    write_pending(&wh, &as_refs(&rows)).await;
    let usd = |s: &str| pfsync::money::Usd::parse(s).unwrap();
    let r = pay(&c, &wh, &PayoutOptions { max_total: Some(usd("22.00")), ..PayoutOptions::default() }).await;
    assert_eq!((r.completed, r.held_by_brake), (4, 6), "{r}");
    assert_eq!(r.usd_moved, usd("20.00"));
    let r = pay(&c, &wh, &PayoutOptions { max_count: Some(3), ..PayoutOptions::default() }).await;
    assert_eq!((r.completed, r.held_by_brake, r.already_final), (3, 3, 4), "{r}");
    assert_eq!(paid_per(&sb, PaidBy::Key).len(), 7);
}

#[tokio::test]
async fn a_dry_run_validates_and_moves_nothing() {
    let sb = sandbox(10).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    write_pending(&wh, &[("d-1", "agent-000001", "1.00", "r"), ("d-2", "agent-000002", "2.00", "r")]).await;
    let before = sb.stats().executed;
    let r = pay(&c, &wh, &PayoutOptions { dry_run: true, ..PayoutOptions::default() }).await;
    assert_eq!(r.plan.len(), 2);
    assert_eq!(sb.stats().executed, before);
    assert!(!dir.path().join("purpleflea/payouts/log").exists(), "nothing written");
}

#[tokio::test]
async fn the_seed_bounty_flow_runs_from_the_actions_table() {
    let sb = Sandbox::start(SandboxConfig {
        world: pfsync::sandbox::SeedConfig { agents: 10, escrows: Some(0), ..Default::default() },
        ..SandboxConfig::for_tests(10)
    })
    .await
    .unwrap();
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    write_actions(
        &wh,
        &[
            ("task-a", "create", None, None, "agent-000001", "50.00", "bounty"),
            ("task-b", "create", None, None, "agent-000002", "30.00", "bounty"),
            ("qc-a", "release", None, Some("task-a"), "", "", "Quality rate 92.0% passed threshold"),
            ("qc-b", "dispute", None, Some("task-b"), "", "", "Quality rate 61.0% below 80% threshold"),
        ],
    )
    .await;
    let seller_before = sb.ledger().wallet("agent-000001").unwrap().balance_usd;
    let r = pay(&c, &wh, &PayoutOptions::default()).await;
    assert_eq!((r.completed, r.waiting, r.unknown), (4, 0, 0), "{r}");
    {
        let l = sb.ledger();
        let mut statuses: Vec<&str> = l.escrows().map(|e| e.status.as_str()).collect();
        statuses.sort();
        assert_eq!(statuses, ["refunded", "released"]);
        assert_eq!(l.wallet("agent-000001").unwrap().balance_usd.cents() - seller_before.cents(), 5000);
    }
    let again = pay(&c, &wh, &PayoutOptions::default()).await;
    assert_eq!((again.completed, again.already_final), (0, 4), "{again}");
}

#[tokio::test]
async fn a_seed_style_double_table_is_paid_when_exact_in_cents() {
    let sb = sandbox(10).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    // The seed's labeling_completions: earned_usd DOUBLE, task_id.
    let loc = dir.path().join("delta/labeling_completions");
    std::fs::create_dir_all(&loc).unwrap();
    let url = url::Url::from_directory_path(&loc).unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        ("agent_id", Arc::new(StringArray::from(vec!["agent-000001", "agent-000002", "agent-000003"])) as ArrayRef),
        ("earned_usd", Arc::new(arrow::array::Float64Array::from(vec![0.1, 19.99, 0.125])) as ArrayRef),
        ("task_id", Arc::new(StringArray::from(vec!["t-1", "t-2", "t-3"])) as ArrayRef),
    ])
    .unwrap();
    deltalake::DeltaTable::try_from_url(url.clone()).await.unwrap().write(vec![batch]).await.unwrap();
    let opts = PayoutOptions {
        payout_sql: Some(
            "SELECT task_id AS payout_id, agent_id, earned_usd AS amount_usd, task_id AS reason FROM labeling_completions".into(),
        ),
        extra_tables: vec![("labeling_completions".into(), url)],
        ..PayoutOptions::default()
    };
    let r = pay(&c, &wh, &opts).await;
    assert_eq!((r.completed, r.rejected_rows), (2, 1), "0.125 is not whole cents: {r}");
    let tx: Vec<String> = sb
        .ledger()
        .transactions()
        .filter(|t| t.reference.as_deref() == Some("t-1"))
        .map(|t| t.amount_usd.to_string())
        .collect();
    assert_eq!(tx, ["0.10"]);
}

/// How long a killed run's intents are left alone in these tests (`--in-flight-timeout`), with the
/// client budget (1 s timeout + 1 s of retries) it must be at least twice.
pub const IN_FLIGHT_SECS: u64 = 4;

/// Move a test's clock past the in-flight timeout of a killed run's intents.
pub fn wait_out_in_flight(later: &Later) {
    later.pass(IN_FLIGHT_SECS + 1);
}

/// `pfsync payouts` as a child process against this test's sandbox, into `wh` (initialised first).
pub fn payouts_cmd(sb: &Sandbox, wh: &std::path::Path) -> Command {
    crate::common::init(wh);
    let mut c = pfsync();
    let in_flight = IN_FLIGHT_SECS.to_string();
    c.sandbox(sb)
        .client_budget(1, 1)
        .arg("-q")
        .args(["payouts", "--in-flight-timeout", &in_flight])
        .warehouse(wh)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Start the child paused at `point`, wait for it to get there, then `kill -9` it.
fn run_and_kill_at(sb: &Sandbox, wh: &std::path::Path, point: &str, later: &Later) {
    let mut child = payouts_cmd(sb, wh).later(later).env("PFSYNC_PAUSE_AT", point).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(stderr);
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("child ended before reaching {point}");
        }
        if line.contains("paused at") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, nothing runs.
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_intents_and_after_the_api_committed_then_rerun_pays_exactly_once() {
    let sb = sandbox(30).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(25, "k");
    write_pending(&wh, &as_refs(&rows)).await;
    let path = dir.path().to_path_buf();
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();

    let executed = sb.stats().executed;
    let later = Later::default();
    tokio::task::block_in_place(|| run_and_kill_at(&sb, &path, "after_intents", &later));
    assert_eq!(sb.stats().executed, executed, "killed before anything was sent");
    // Right after the kill its intents may still be in flight for all another run can tell: left alone.
    let status = tokio::task::block_in_place(|| payouts_cmd(&sb, &path).later(&later).status().unwrap());
    assert_eq!((status.code(), sb.stats().executed), (Some(6), executed), "a fresh intent is not touched");
    wait_out_in_flight(&later);
    tokio::task::block_in_place(|| run_and_kill_at(&sb, &path, "after_send", &later));
    assert_eq!(paid_per(&sb, PaidBy::Key).len(), 25, "the API committed every payout before the kill");
    wait_out_in_flight(&later);
    let status = tokio::task::block_in_place(|| payouts_cmd(&sb, &path).later(&later).status().unwrap());
    assert_eq!(status.code(), Some(0));
    assert_paid_once(&sb, PaidBy::Key, &ids, "after kills and reruns");
    let c = client(&sb);
    let r = pay(&c, &warehouse(&dir), &PayoutOptions::default()).await;
    assert_eq!((r.completed, r.already_final), (0, 25), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_at_once_pay_each_payout_once() {
    let mut cfg = SandboxConfig::for_tests(50);
    cfg.faults.latency_prob = 1.0;
    cfg.faults.latency_min = Duration::from_millis(5);
    cfg.faults.latency_max = Duration::from_millis(20);
    let sb = Sandbox::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(150, "c");
    write_pending(&wh, &as_refs(&rows)).await;
    let path = dir.path().to_path_buf();
    let (a, b) = tokio::task::block_in_place(|| {
        let mut a = payouts_cmd(&sb, &path).arg("--batch-size").arg("40").spawn().unwrap();
        let mut b = payouts_cmd(&sb, &path).arg("--batch-size").arg("40").spawn().unwrap();
        (a.wait().unwrap(), b.wait().unwrap())
    });
    // Either may see the other's requests in flight (409 -> unknown, exit 6); neither pays twice.
    for s in [a, b] {
        assert!(matches!(s.code(), Some(0) | Some(6)), "{s:?}");
    }
    let status = tokio::task::block_in_place(|| payouts_cmd(&sb, &path).status().unwrap());
    assert_eq!(status.code(), Some(0));
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "two processes at once");
}

/// Money moved, as `purpleflea.ops.runs` records it for the payouts steps of this warehouse.
async fn recorded_moved(wh: &Warehouse) -> pfsync::money::Usd {
    use arrow::array::Array;
    let ctx = sql_context(wh).await.unwrap();
    let sql = "SELECT CAST(sum(amount_usd) AS DECIMAL(18,2)) FROM purpleflea.ops.runs WHERE step = 'payouts'";
    let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let col = b[0].column(0).as_any().downcast_ref::<Decimal128Array>().unwrap();
    pfsync::money::Usd::from_cents(if col.is_null(0) { 0 } else { col.value(0) as i64 }).unwrap()
}

/// Two runs at once with their own payout logs (two warehouses, one provider account and namespace): the
/// provider pays each payout once and replays the other run's sends, and `purpleflea.ops.runs` records
/// what each run actually moved, so the two amounts add up to the money paid, not twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_record_replays_as_replays_not_as_money_moved() {
    let mut cfg = SandboxConfig::for_tests(50);
    cfg.faults.latency_prob = 1.0;
    cfg.faults.latency_min = Duration::from_millis(2);
    cfg.faults.latency_max = Duration::from_millis(10);
    let sb = Sandbox::start(cfg).await.unwrap();
    let rows = n_payouts(60, "h");
    let total: i64 = rows.iter().map(|r| pfsync::money::Usd::parse(&r.2).unwrap().cents()).sum();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&da, &db] {
        write_pending(&warehouse(d), &as_refs(&rows)).await;
    }
    let (a, b) = tokio::task::block_in_place(|| {
        let mut a = payouts_cmd(&sb, da.path()).arg("--batch-size").arg("20").spawn().unwrap();
        let mut b = payouts_cmd(&sb, db.path()).arg("--batch-size").arg("20").spawn().unwrap();
        (a.wait().unwrap(), b.wait().unwrap())
    });
    assert_eq!((a.code(), b.code()), (Some(0), Some(0)));
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "two runs with logs of their own");
    let (ma, mb) = (recorded_moved(&warehouse(&da)).await, recorded_moved(&warehouse(&db)).await);
    assert_eq!(
        ma.cents() + mb.cents(),
        total,
        "moved {ma} + {mb}, paid {}",
        pfsync::money::Usd::from_cents(total).unwrap()
    );
}

/// A refused row is recorded once per version of it: an hourly job over a source that still holds it does
/// not append it again, and exits 5 only when something new was refused. Editing the row makes a new
/// version (recorded, exit 5 again); fixing it gets it paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_is_recorded_once_per_version_and_exits_5_only_when_new() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::common::init(dir.path());
    let source = |bad_amount: &str| {
        format!(
            "SELECT * FROM (VALUES ('good-1', 'agent-000001', '1.00', 'task'), \
             ('bad-1', 'agent-000002', '{bad_amount}', 'task'), (NULL, 'agent-000003', '2.00', 'task')) \
             AS t(payout_id, agent_id, amount_usd, reason)"
        )
    };
    let run = |sql: String| {
        let mut c = pfsync();
        c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--payouts-sql", &sql]);
        crate::common::output_in_place(&mut c)
    };
    let rejects = || async {
        let ctx = sql_context(&wh).await.unwrap();
        crate::common::count(&ctx, "SELECT count(*) FROM purpleflea.payouts.rejects").await
    };

    let first = run(source("-5.00"));
    assert_eq!(first.status.code(), Some(5), "{}", crate::common::text(&first));
    assert_eq!(rejects().await, 2, "the negative amount and the missing id");

    // The same source an hour later: nothing new refused, nothing recorded again, exit 0.
    for _ in 0..2 {
        let again = run(source("-5.00"));
        let t = crate::common::text(&again);
        assert_eq!(again.status.code(), Some(0), "{t}");
        assert!(t.contains("refused by validation 2 (2 of them before)"), "{t}");
        assert!(!t.contains("WARN"), "no warning for what was refused before: {t}");
        assert_eq!(rejects().await, 2, "{t}");
    }

    // Edited but still wrong: a new version, recorded and said (exit 5).
    let edited = run(source("-6.00"));
    let t = crate::common::text(&edited);
    assert_eq!(edited.status.code(), Some(5), "{t}");
    assert!(t.contains("refused by validation 2 (1 of them before)"), "{t}");
    assert_eq!(rejects().await, 3);

    // Fixed: paid once, and the row with no id is still only counted.
    let fixed = run(source("6.00"));
    let t = crate::common::text(&fixed);
    assert_eq!(fixed.status.code(), Some(0), "{t}");
    assert_eq!(rejects().await, 3);
    assert_paid_once(&sb, PaidBy::Key, &["good-1", "bad-1"], "the good row, and the bad one once fixed");
}
