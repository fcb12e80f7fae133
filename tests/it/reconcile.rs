//! Reconciliation: one planted example of every class gives exactly those findings; a clean run gives none;
//! a fixed finding is marked resolved in the next run.

use std::collections::BTreeMap;

use pfsync::payouts::log::{LogEvent, append_events};
use pfsync::payouts::state::Event;
use pfsync::payouts::{PayoutOptions, run_payouts};
use pfsync::progress::Progress;
use pfsync::provider::records::{Escrow, Transaction, Wallet};
use pfsync::provider::seed::SeedClient as Client;
use pfsync::provider::seed::wire::PayoutRequest;
use pfsync::reconcile::{ReconcileOptions, ReconcileReport, reconcile, report};
use pfsync::sandbox::{Sandbox, SandboxConfig, SeedConfig};
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{CommitInfo, PAYOUT_LOG, Warehouse, open_existing};
use serde_json::json;

use crate::common::{client, usd, warehouse};
use crate::payouts::write_pending;

fn commit(step: &'static str) -> CommitInfo {
    CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step }
}

async fn sync_and_reconcile(c: &Client, wh: &Warehouse) -> ReconcileReport {
    let p = Progress::hidden();
    let o = SyncOptions::default();
    sync_table::<Wallet>(c, wh, &commit("sync"), &o, &p).await.unwrap();
    sync_table::<Escrow>(c, wh, &commit("sync"), &o, &p).await.unwrap();
    sync_table::<Transaction>(c, wh, &commit("sync"), &o, &p).await.unwrap();
    reconcile(wh, &commit("reconcile"), &ReconcileOptions::default()).await.unwrap()
}

fn open_classes(r: &ReconcileReport) -> BTreeMap<String, String> {
    r.open()
        .map(|f| {
            let subject = f
                .finding
                .operation_id
                .clone()
                .or(f.finding.tx_ids.clone())
                .or(f.finding.agent_id.clone())
                .unwrap_or_default();
            (f.finding.class.as_str().to_string(), subject)
        })
        .collect()
}

async fn admin(sb: &Sandbox, method: reqwest::Method, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new()
        .request(method, format!("{}/admin/{path}", sb.base_url()))
        .bearer_auth("pf_test_sandbox")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "admin {path}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn one_planted_example_of_every_class_gives_exactly_those_findings() {
    let cfg = SandboxConfig {
        world: SeedConfig { agents: 30, escrows: Some(0), ..SeedConfig::default() },
        admin: true,
        ..SandboxConfig::for_tests(30)
    };
    let sb = Sandbox::start(cfg).await.unwrap();
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    write_pending(
        &wh,
        &[
            ("p-ok", "agent-000001", "1.00", "ok"),
            ("p-dup", "agent-000005", "5.00", "dup"),
            ("p-unattr", "agent-000006", "6.00", "bonus week 12"),
            ("p-rej", "agent-999999", "7.00", "rejected"),
        ],
    )
    .await;
    let opts = PayoutOptions { check_agents: false, ..PayoutOptions::default() };
    let r = run_payouts(
        &pfsync::provider::seed::SeedProvider::new(c.clone(), true),
        &wh,
        &commit("payouts"),
        &opts,
        &Progress::hidden(),
    )
    .await
    .unwrap();
    assert_eq!((r.completed, r.rejected_by_api), (3, 1), "{r}");

    // A clean state first: everything matched.
    let clean = sync_and_reconcile(&c, &wh).await;
    assert_eq!(clean.open().count(), 0, "{}", report::text(&clean));
    assert_eq!(clean.counts.get("matched"), Some(&4));

    // Plant one of each, in the provider's ledger (admin controls) and in the log.
    use reqwest::Method;
    let insert = |agent: &str, amount: f64, key: &str| json!({"kind": "payout", "agent_id": agent, "amount_usd": amount, "idempotency_key": key, "reference": "planted"});
    admin(&sb, Method::POST, "transactions", insert("agent-000002", 2.00, "pfsync:default:payout:p-amt")).await;
    admin(&sb, Method::POST, "transactions", insert("agent-000010", 3.00, "pfsync:default:payout:p-agent")).await;
    admin(&sb, Method::POST, "transactions", insert("agent-000005", 5.00, "pfsync:default:payout:p-dup")).await;
    admin(&sb, Method::POST, "transactions", insert("agent-000007", 9.99, "pfsync:default:payout:ghost")).await;
    admin(&sb, Method::POST, "transactions", insert("agent-000008", 7.00, "pfsync:default:payout:p-rej")).await;
    let log = open_existing(&wh, &PAYOUT_LOG).await.unwrap().unwrap();
    let ev = |op: &str, event: Event, agent: &str, amount: &str, tx: Option<&str>, hours_ago: i64| LogEvent {
        agent_id: Some(agent.into()),
        amount_usd: Some(usd(amount)),
        reason: Some("planted".into()),
        tx_id: tx.map(str::to_string),
        ..LogEvent::new(
            op,
            pfsync::operation::OpKind::Payout,
            event,
            1,
            format!("pfsync:default:payout:{op}"),
            "planted-run",
            chrono::Utc::now() - chrono::Duration::hours(hours_ago),
        )
    };
    let planted = [
        // The log says 2.50, the provider has 2.00.
        ev("p-amt", Event::Intent, "agent-000002", "2.50", None, 0),
        ev("p-amt", Event::Completed, "agent-000002", "2.50", None, 0),
        // The log says agent-000003, the provider paid agent-000010.
        ev("p-agent", Event::Intent, "agent-000003", "3.00", None, 0),
        ev("p-agent", Event::Completed, "agent-000003", "3.00", None, 0),
        // The log says completed as tx_999999999999, which the provider does not have.
        ev("p-missing", Event::Intent, "agent-000004", "4.00", None, 0),
        ev("p-missing", Event::Completed, "agent-000004", "4.00", Some("tx_999999999999"), 0),
        // An intent two hours old with no outcome.
        ev("p-stale", Event::Intent, "agent-000009", "9.00", None, 2),
    ];
    append_events(log, &planted, &commit("plant")).await.unwrap();
    let original = sb.ledger().wallet("agent-000020").unwrap().balance_usd;
    admin(&sb, Method::POST, "wallets/agent-000020/balance", json!({"balance_usd": 12345.67})).await;
    // Paid again by hand, outside pfsync: same agent, amount and reason, no key.
    c.payout(
        &PayoutRequest { agent_id: "agent-000006".into(), amount_usd: usd("6.00"), reason: "bonus week 12".into() },
        None,
    )
    .await
    .unwrap();

    let first = sync_and_reconcile(&c, &wh).await;
    let want: BTreeMap<String, String> = [
        ("amount_mismatch", "p-amt"),
        ("agent_mismatch", "p-agent"),
        ("missing_at_provider", "p-missing"),
        ("duplicate_at_provider", "p-dup"),
        ("status_mismatch", "p-rej"),
        ("stale_unknown", "p-stale"),
        ("unattributed_payout", "p-unattr"),
        ("balance_mismatch", "agent-000020"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut got = open_classes(&first);
    let unlogged = got.remove("unlogged_at_provider").expect("the ghost transaction is unlogged");
    assert!(unlogged.starts_with("tx_"), "{unlogged}");
    assert_eq!(got, want, "{}", report::text(&first));
    assert_eq!(first.open().count(), 9, "exactly one finding per class");
    let amt = first.open().find(|f| f.finding.operation_id.as_deref() == Some("p-amt")).unwrap();
    assert_eq!((amt.finding.expected_amount, amt.finding.actual_amount), (Some(usd("2.50")), Some(usd("2.00"))));

    // The HTML report is self-contained and shows every finding.
    let html = report::html(&first);
    for class in want.keys() {
        assert!(html.contains(class.as_str()), "{class}");
    }
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src=\"http"));

    // Fix one: the balance; the next run resolves it and carries the others' first sighting.
    admin(
        &sb,
        Method::POST,
        "wallets/agent-000020/balance",
        json!({"balance_usd": original.to_string().parse::<f64>().unwrap()}),
    )
    .await;
    let second = sync_and_reconcile(&c, &wh).await;
    let resolved: Vec<&str> = second.resolved().filter_map(|f| f.finding.agent_id.as_deref()).collect();
    assert_eq!(resolved, ["agent-000020"]);
    assert!(second.resolved().all(|f| f.resolved_at.is_some()));
    assert_eq!(second.open().count(), 8);
    let first_run = &first.run_id;
    assert!(second.open().all(|f| &f.first_seen_run == first_run), "first_seen carried forward");

    // The auditors' view agrees.
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    assert_eq!(crate::common::count(&ctx, "SELECT count(*) FROM purpleflea.payouts.open_findings").await, 8);
}

/// A finding row the previous run left open, as another writer (or a bad migration) could leave it: the
/// given class, every optional column NULL.
async fn plant_open_finding(wh: &Warehouse, class: &str, key: &str) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::DataType;
    use pfsync::tables::RECONCILIATION;

    let now = chrono::Utc::now().timestamp_micros();
    let text = |name: &str| match name {
        "run_id" | "first_seen_run" => Some("planted-run"),
        "finding_key" => Some(key),
        "class" => Some(class),
        "operation_id" => Some("op-planted"),
        "detail" => Some("planted"),
        _ => None,
    };
    let schema = RECONCILIATION.arrow_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from(vec![text(f.name())])),
                DataType::Decimal128(p, s) => {
                    Arc::new(Decimal128Array::from(vec![None::<i128>]).with_precision_and_scale(*p, *s).unwrap())
                }
                DataType::Timestamp(..) => {
                    let v = (f.name() != "resolved_at").then_some(now);
                    Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
                }
                other => panic!("{}: no planted value for {other}", f.name()),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let table = pfsync::tables::open_or_create(wh, &RECONCILIATION, &commit("plant")).await.unwrap();
    table.write(vec![batch]).with_save_mode(deltalake::protocol::SaveMode::Append).await.unwrap();
}

#[tokio::test]
async fn reconcile_stops_at_a_finding_row_it_cannot_decode_and_names_it() {
    use pfsync::reconcile::{CellError, ReconcileError};
    use pfsync::tables::RECONCILIATION;

    let sb = crate::common::sandbox(10).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    write_pending(&wh, &[("p-1", "agent-000001", "1.00", "r")]).await;
    run_payouts(
        &pfsync::provider::seed::SeedProvider::new(c.clone(), true),
        &wh,
        &commit("payouts"),
        &PayoutOptions::default(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    let clean = sync_and_reconcile(&c, &wh).await;
    assert_eq!(clean.open().count(), 0, "{}", report::text(&clean));

    // A class no rule gives. Before typed decoding it was read as "no class" and silently carried along.
    plant_open_finding(&wh, "no_such_class", "no_such_class:op-planted").await;
    let version = open_existing(&wh, &RECONCILIATION).await.unwrap().unwrap().version();
    let err = reconcile(&wh, &commit("reconcile"), &ReconcileOptions::default()).await.unwrap_err();
    match &err {
        ReconcileError::Undecodable { query, row, source: CellError::Value { column: "class", value, .. } } => {
            assert_eq!(*query, "sql/reconcile/previous_open.sql");
            assert!(row.contains("finding_key=no_such_class:op-planted"), "{row}");
            assert_eq!(value, "no_such_class");
        }
        other => panic!("expected an undecodable class, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("previous_open.sql") && message.contains("no_such_class:op-planted"), "{message}");
    // Nothing was recorded on top of the row it could not read.
    assert_eq!(open_existing(&wh, &RECONCILIATION).await.unwrap().unwrap().version(), version);
}

#[tokio::test]
async fn reconcile_binds_the_namespace_as_a_value_not_as_sql_text() {
    let cfg = SandboxConfig {
        world: SeedConfig { agents: 10, escrows: Some(0), ..SeedConfig::default() },
        admin: true,
        ..SandboxConfig::for_tests(10)
    };
    let sb = Sandbox::start(cfg).await.unwrap();
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let ghost = json!({"kind": "payout", "agent_id": "agent-000007", "amount_usd": 9.99,
        "idempotency_key": "pfsync:default:payout:ghost", "reference": "planted"});
    admin(&sb, reqwest::Method::POST, "transactions", ghost).await;
    let p = Progress::hidden();
    sync_table::<Transaction>(&c, &wh, &commit("sync"), &SyncOptions::default(), &p).await.unwrap();

    // A quote in the namespace used to end the SQL string literal; as a bound value it is just text that
    // no key starts with.
    for namespace in ["o'brien", "x') OR true OR starts_with('"] {
        let opts = ReconcileOptions { namespace: namespace.into(), ..ReconcileOptions::default() };
        let r = reconcile(&wh, &commit("reconcile"), &opts).await.unwrap();
        assert_eq!(r.counts.get("unlogged_at_provider"), None, "{namespace}: {}", report::text(&r));
    }
    let ours = reconcile(&wh, &commit("reconcile"), &ReconcileOptions::default()).await.unwrap();
    assert_eq!(ours.counts.get("unlogged_at_provider"), Some(&1), "{}", report::text(&ours));
}
