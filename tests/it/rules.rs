//! Metric rules against a real MLflow tracking server (`mlflow_server`) and the seed sandbox: a rule that
//! fires releases once, across reruns and a SIGKILL between send and log commit, and its MLflow run is
//! tagged with the outcome; a rule that never fires moves nothing; past its deadline it disputes once.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use pfsync::payouts::PayoutOptions;
use pfsync::sandbox::{Sandbox, SandboxConfig, SeedConfig};
use pfsync::tables::{CommitInfo, ESCROW_RULES, Warehouse, open_or_create, sql_context};

use crate::common::{
    Later, PaidBy, PfsyncCommand, client, output_in_place as run, paid_per, pay_with, pfsync, text, warehouse,
};
use crate::mlflow_server::{MlflowServer, server};
use crate::payouts::{IN_FLIGHT_SECS, wait_out_in_flight, write_actions};

/// A row of purpleflea.escrow.rules.
#[derive(Default, Clone)]
pub struct RuleRow {
    pub rule_id: &'static str,
    pub escrow_id: Option<String>,
    pub create_action_id: Option<&'static str>,
    pub mlflow_run_id: Option<String>,
    pub experiment_id: Option<String>,
    pub run_filter: Option<String>,
    pub runs_since: Option<DateTime<Utc>>,
    pub metric_key: &'static str,
    pub threshold: Option<f64>,
    pub direction: &'static str,
    pub deadline: Option<DateTime<Utc>>,
    pub on_deadline: Option<&'static str>,
    pub reason: Option<&'static str>,
}

pub async fn write_rules(wh: &Warehouse, rows: &[RuleRow]) {
    let commit = CommitInfo { run_id: "upstream".into(), step: "test" };
    let table = open_or_create(wh, &ESCROW_RULES, &commit).await.unwrap();
    let text =
        |f: &dyn Fn(&RuleRow) -> Option<String>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let columns: Vec<ArrayRef> = vec![
        text(&|r| Some(r.rule_id.to_string())),
        text(&|r| r.escrow_id.clone()),
        text(&|r| r.create_action_id.map(str::to_string)),
        text(&|r| r.mlflow_run_id.clone()),
        text(&|r| r.experiment_id.clone()),
        text(&|r| r.run_filter.clone()),
        Arc::new(
            rows.iter()
                .map(|r| r.runs_since.map(|d| d.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        text(&|r| Some(r.metric_key.to_string())),
        Arc::new(rows.iter().map(|r| r.threshold).collect::<Float64Array>()),
        text(&|r| Some(r.direction.to_string())),
        Arc::new(
            rows.iter()
                .map(|r| r.deadline.map(|d| d.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        text(&|r| r.on_deadline.map(str::to_string)),
        text(&|r| r.reason.map(str::to_string)),
        text(&|_| Some("tests".to_string())),
    ];
    let batch = RecordBatch::try_new(ESCROW_RULES.arrow_schema(), columns).unwrap();
    table.write(vec![batch]).await.unwrap();
}

/// `pfsync rules` as a child process against this sandbox and MLflow server.
pub(crate) fn rules_cmd(sb: &Sandbox, ml: &MlflowServer, wh: &std::path::Path) -> Command {
    command(sb, ml, wh, &["rules"])
}

/// `pfsync <command...>` as a child process against this sandbox and MLflow server.
fn command(sb: &Sandbox, ml: &MlflowServer, wh: &std::path::Path, command: &[&str]) -> Command {
    let mut c = pfsync();
    c.sandbox(sb)
        .client_budget(1, 1)
        .arg("-q")
        .args(command)
        .args(["--in-flight-timeout", &IN_FLIGHT_SECS.to_string()])
        .warehouse(wh)
        .env("MLFLOW_TRACKING_URI", &ml.url)
        .stdin(Stdio::null());
    c
}

pub(crate) async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        world: SeedConfig { agents: 10, escrows: Some(0), ..Default::default() },
        ..SandboxConfig::for_tests(10)
    })
    .await
    .unwrap()
}

/// Run the escrow creates of the actions table (in-process); the escrow id each create made.
pub(crate) async fn create_escrows(
    sb: &Sandbox,
    wh: &Warehouse,
    creates: &[(&str, &str, &str)],
) -> HashMap<String, String> {
    let rows: Vec<_> =
        creates.iter().map(|(id, seller, amount)| (*id, "create", None, None, *seller, *amount, "bounty")).collect();
    write_actions(wh, &rows).await;
    let provider = pfsync::provider::seed::SeedProvider::new(client(sb), true);
    let r = pay_with(&provider, wh, &PayoutOptions::default()).await.unwrap();
    assert_eq!(r.completed, creates.len() as u64, "{r}");
    let ctx = sql_context(wh).await.unwrap();
    let b = ctx
        .sql("SELECT operation_id, escrow_id FROM purpleflea.payouts.log WHERE event = 'completed' AND kind = 'escrow_create'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = HashMap::new();
    for batch in b {
        let s = |i: usize| arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
        let (ids, escrows) = (s(0), s(1));
        let (ids, escrows) = (
            ids.as_any().downcast_ref::<StringArray>().unwrap(),
            escrows.as_any().downcast_ref::<StringArray>().unwrap(),
        );
        for i in 0..batch.num_rows() {
            out.insert(ids.value(i).to_string(), escrows.value(i).to_string());
        }
    }
    out
}

pub(crate) fn escrow_status(sb: &Sandbox, escrow_id: &str) -> String {
    sb.ledger().escrow(escrow_id).unwrap().status.as_str().to_string()
}

/// Column 0 of a query, as text.
async fn strings(wh: &Warehouse, sql: &str) -> Vec<String> {
    let ctx = sql_context(wh).await.unwrap();
    let mut out = Vec::new();
    for b in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let c = c.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..c.len()).map(|i| c.value(i).to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_releases_once_across_reruns_and_a_kill_after_send_and_tags_its_mlflow_run() {
    let Some(ml) = server() else { return };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("c-1", "agent-000001", "25.00")]).await;
    let escrow = escrows["c-1"].clone();
    let seller_before = sb.ledger().wallet("agent-000001").unwrap().balance_usd;
    let run_id = tokio::task::block_in_place(|| ml.run_with("pfsync-rules-fire", "val_accuracy", &[0.80, 0.90]));
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r1",
            create_action_id: Some("c-1"),
            mlflow_run_id: Some(run_id.clone()),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">=",
            reason: Some("EscrowReleaseCallback: model good enough"),
            ..RuleRow::default()
        }],
    )
    .await;

    // Below the threshold: nothing moves.
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(escrow_status(&sb, &escrow), "funded");

    // The metric crosses; the run dies between the release and its log commit.
    tokio::task::block_in_place(|| ml.log(&run_id, "val_accuracy", &[(2, 0.96), (3, 0.97)]));
    let o = run(rules_cmd(&sb, ml, dir.path()).env("PFSYNC_CRASH_AT", "after_send"));
    assert_eq!(o.status.code(), None, "killed at after_send: {}", text(&o));
    assert_eq!(escrow_status(&sb, &escrow), "released", "the release ran before the kill");
    let key = "pfsync:default:escrow_release:rule:r1";
    assert_eq!(paid_per(&sb, PaidBy::Key).get(key).copied(), Some(1));
    assert!(ml.purpleflea_tags(&run_id).is_empty(), "no outcome logged, nothing tagged");

    // The next run resolves it from the provider, sends nothing again, and tags the run.
    let later = Later::default();
    wait_out_in_flight(&later);
    let o = run(rules_cmd(&sb, ml, dir.path()).later(&later));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 MLflow run(s) tagged"), "{}", text(&o));
    assert_eq!(paid_per(&sb, PaidBy::Key).get(key).copied(), Some(1), "released once");
    let seller_after = sb.ledger().wallet("agent-000001").unwrap().balance_usd;
    assert_eq!(seller_after.cents() - seller_before.cents(), 2500);
    let tx = sb.ledger().escrow(&escrow).unwrap().tx_id.clone().unwrap();
    let tags: HashMap<String, String> =
        tokio::task::block_in_place(|| ml.purpleflea_tags(&run_id)).into_iter().collect();
    assert_eq!(tags.get("purpleflea.action").map(String::as_str), Some("release"), "{tags:?}");
    assert_eq!(tags.get("purpleflea.escrow_id"), Some(&escrow), "{tags:?}");
    assert_eq!(tags.get("purpleflea.tx_id"), Some(&tx), "{tags:?}");
    assert_eq!(tags.get("purpleflea.rule_id").map(String::as_str), Some("r1"), "{tags:?}");
    assert!(tags.get("purpleflea.pfsync_run_id").is_some_and(|r| !r.is_empty()), "{tags:?}");
    // The same record as a JSON artifact of the run.
    let record: HashMap<String, String> =
        serde_json::from_str(&tokio::task::block_in_place(|| ml.artifact(&run_id, "purpleflea_escrow.json"))).unwrap();
    assert_eq!(record, tags, "the artifact holds the tags' record");

    // The reason names run, metric, value and step: the first value over the threshold.
    let reasons =
        strings(&wh, "SELECT reason FROM purpleflea.payouts.log WHERE operation_id = 'rule:r1' AND event = 'intent'")
            .await;
    assert!(
        reasons.iter().all(|r| r.contains(&format!("MLflow run {run_id} metric val_accuracy = 0.96 at step 2"))),
        "{reasons:?}"
    );

    // Reruns, as `pfsync rules` and as the rules step of `pfsync run`: nothing sent, nothing tagged again.
    let executed = sb.stats().executed;
    for cmd in [&["rules"][..], &["run", "--steps", "rules,payouts"][..]] {
        let o = run(&mut command(&sb, ml, dir.path(), cmd));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("0 MLflow run(s) tagged"), "{}", text(&o));
    }
    assert_eq!(sb.stats().executed, executed);
    assert_eq!(paid_per(&sb, PaidBy::Key).get(key).copied(), Some(1));

    // A run that lacks its tags (a tagging that failed, a tag removed) is tagged again by the next run;
    // the payment is not touched.
    tokio::task::block_in_place(|| {
        ml.python(&format!("mlflow.MlflowClient().delete_tag({run_id:?}, 'purpleflea.tx_id')"))
    });
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 MLflow run(s) tagged, 0 tag failure(s)"), "{}", text(&o));
    let again: HashMap<String, String> =
        tokio::task::block_in_place(|| ml.purpleflea_tags(&run_id)).into_iter().collect();
    assert_eq!(again, tags);
    assert_eq!(sb.stats().executed, executed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_never_fires_moves_nothing_and_past_its_deadline_disputes_once() {
    let Some(ml) = server() else { return };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(
        &sb,
        &wh,
        &[("c-2", "agent-000002", "10.00"), ("c-3", "agent-000003", "12.00"), ("c-4", "agent-000004", "8.00")],
    )
    .await;
    let (slow, found) = tokio::task::block_in_place(|| {
        let slow = ml.run_with("pfsync-rules-deadline", "latency_ms", &[80.0, 75.0, 70.0]);
        let found = ml.run_with("pfsync-rules-deadline", "latency_ms", &[60.0, 42.0]);
        ml.python(&format!("mlflow.MlflowClient().set_tag({found:?}, 'task', 'bounty-4')"));
        (slow, found)
    });
    let experiment = tokio::task::block_in_place(|| {
        ml.python("print(mlflow.MlflowClient().get_experiment_by_name('pfsync-rules-deadline').experiment_id)")
    });
    let now = Utc::now();
    let latency = RuleRow {
        mlflow_run_id: Some(slow.clone()),
        metric_key: "latency_ms",
        threshold: Some(50.0),
        direction: "<",
        ..RuleRow::default()
    };
    write_rules(
        &wh,
        &[
            // Not yet: the deadline is ahead.
            RuleRow {
                rule_id: "r-wait",
                create_action_id: Some("c-2"),
                deadline: Some(now + chrono::Duration::hours(1)),
                on_deadline: Some("dispute"),
                ..latency.clone()
            },
            // Past the deadline, but told to do nothing.
            RuleRow {
                rule_id: "r-quiet",
                create_action_id: Some("c-2"),
                deadline: Some(now - chrono::Duration::minutes(1)),
                on_deadline: Some("nothing"),
                ..latency.clone()
            },
            // Past the deadline without a hit: dispute.
            RuleRow {
                rule_id: "r-late",
                escrow_id: Some(escrows["c-3"].clone()),
                deadline: Some(now - chrono::Duration::minutes(1)),
                on_deadline: Some("dispute"),
                ..latency.clone()
            },
            // Any run of the experiment with the task's tag: that one is under 50 ms. Its runs started
            // before the rule was written: the rule says they count.
            RuleRow {
                rule_id: "r-search",
                create_action_id: Some("c-4"),
                mlflow_run_id: None,
                experiment_id: Some(experiment.clone()),
                run_filter: Some("tags.task = 'bounty-4'".into()),
                runs_since: Some(now - chrono::Duration::hours(1)),
                ..latency.clone()
            },
            RuleRow { rule_id: "r-bad", create_action_id: Some("c-2"), direction: "=>", ..latency.clone() },
            RuleRow {
                rule_id: "r-ghost",
                create_action_id: Some("c-2"),
                mlflow_run_id: Some("0123456789abcdef0123456789abcdef".into()),
                ..latency.clone()
            },
        ],
    )
    .await;

    for round in 0..2 {
        let o = run(&mut rules_cmd(&sb, ml, dir.path()));
        // Two rule rows are refused (into the rejects table) on the first run: exit 5. The second finds them
        // unchanged: refused before, recorded once, exit 0.
        let want = if round == 0 { 5 } else { 0 };
        assert_eq!(o.status.code(), Some(want), "round {round}: {}", text(&o));
        if round == 1 {
            assert!(text(&o).contains("refused by validation 2 (2 of them before)"), "{}", text(&o));
        }
        assert_eq!(escrow_status(&sb, &escrows["c-2"]), "funded", "round {round}: no rule fired for c-2");
        assert_eq!(escrow_status(&sb, &escrows["c-3"]), "refunded", "round {round}: disputed");
        assert_eq!(escrow_status(&sb, &escrows["c-4"]), "released", "round {round}: found by the search");
        let keys = paid_per(&sb, PaidBy::Key);
        assert_eq!(keys.get("pfsync:default:escrow_dispute:rule:r-late").copied(), Some(1));
        assert_eq!(keys.get("pfsync:default:escrow_release:rule:r-search").copied(), Some(1));
        assert!(!keys.keys().any(|k| k.contains("rule:r-wait") || k.contains("rule:r-quiet")), "{keys:?}");
    }
    let rejects =
        strings(&wh, "SELECT operation_id || ' ' || kind || ' ' || code FROM purpleflea.payouts.rejects ORDER BY 1")
            .await;
    let mut want = vec!["rule:r-bad escrow_rule invalid_rule", "rule:r-ghost escrow_rule invalid_rule"];
    want.sort();
    assert_eq!(rejects, want);
    let reason = strings(
        &wh,
        "SELECT reason FROM purpleflea.payouts.log WHERE operation_id = 'rule:r-late' AND event = 'intent'",
    )
    .await;
    assert!(reason[0].contains("passed without metric latency_ms < 50"), "{reason:?}");
    let tags: HashMap<String, String> = tokio::task::block_in_place(|| ml.purpleflea_tags(&slow)).into_iter().collect();
    assert_eq!(tags.get("purpleflea.action").map(String::as_str), Some("dispute"), "{tags:?}");
    let tags: HashMap<String, String> =
        tokio::task::block_in_place(|| ml.purpleflea_tags(&found)).into_iter().collect();
    assert_eq!(tags.get("purpleflea.action").map(String::as_str), Some("release"), "{tags:?}");
    assert_eq!(tags.get("purpleflea.rule_id").map(String::as_str), Some("r-search"), "{tags:?}");
}

/// Databricks-hosted MLflow (`DATABRICKS_HOST` + `DATABRICKS_TOKEN`), as documented, in front of the real
/// server ([`crate::databricks_mlflow`]): a wrong token moves nothing and is never printed; the right one
/// reads the metric, releases once, tags the run, and writes no artifact (a workspace's are in DBFS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databricks_hosted_mlflow_with_a_workspace_token_releases_once_and_tags_the_run() {
    let Some(ml) = server() else { return };
    let token = "dapi0123456789abcdef-workspace-token";
    let workspace = crate::databricks_mlflow::DatabricksMlflow::start(&ml.url, token).await;
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("c-dbx", "agent-000005", "15.00")]).await;
    let escrow = escrows["c-dbx"].clone();
    let run_id = tokio::task::block_in_place(|| ml.run_with("pfsync-rules-databricks", "val_accuracy", &[0.91, 0.96]));
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r-dbx",
            create_action_id: Some("c-dbx"),
            mlflow_run_id: Some(run_id.clone()),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">",
            reason: Some("EscrowReleaseCallback on Databricks"),
            ..RuleRow::default()
        }],
    )
    .await;
    let on_workspace = |t: &str| {
        let mut c = rules_cmd(&sb, ml, dir.path());
        c.env_remove("MLFLOW_TRACKING_URI").env("DATABRICKS_HOST", &workspace.host).env("DATABRICKS_TOKEN", t);
        c
    };

    // A token the workspace refuses: the rule cannot be judged, nothing moves, no token is shown.
    let wrong = "dapi-expired-token-9876";
    let o = run(&mut on_workspace(wrong));
    let out = text(&o);
    assert!(!out.contains(wrong) && !out.contains(token), "{out}");
    assert!(out.contains("401"), "the refusal is reported: {out}");
    assert_eq!(escrow_status(&sb, &escrow), "funded", "{out}");
    assert!(workspace.seen().iter().all(|s| !s.authorized));

    // The workspace's token: released once, the run tagged through the workspace API.
    let o = run(&mut on_workspace(token));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains(token), "{out}");
    assert_eq!(escrow_status(&sb, &escrow), "released", "{out}");
    assert!(out.contains("1 MLflow run(s) tagged"), "{out}");
    let tags: HashMap<String, String> =
        tokio::task::block_in_place(|| ml.purpleflea_tags(&run_id)).into_iter().collect();
    assert_eq!(tags.get("purpleflea.action").map(String::as_str), Some("release"), "{tags:?}");
    assert_eq!(tags.get("purpleflea.escrow_id"), Some(&escrow), "{tags:?}");
    let seen: Vec<_> = workspace.seen().into_iter().filter(|s| s.authorized).collect();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s.path.starts_with("/api/2.0/mlflow/")), "only the MLflow REST API 2.0: {seen:?}");
    assert!(seen.iter().any(|s| s.method == "POST" && s.path == "/api/2.0/mlflow/runs/set-tag"), "{seen:?}");

    // Again: nothing sent, nothing tagged.
    let executed = sb.stats().executed;
    let o = run(&mut on_workspace(token));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("0 MLflow run(s) tagged"), "{}", text(&o));
    assert_eq!(sb.stats().executed, executed);
    assert_eq!(paid_per(&sb, PaidBy::Key).get("pfsync:default:escrow_release:rule:r-dbx").copied(), Some(1));
}

/// Log `value` for `key` in `run_id` at `step`, with the time `at` as the client claims it.
fn log_at(ml: &MlflowServer, run_id: &str, key: &str, value: f64, step: i64, at: DateTime<Utc>) {
    tokio::task::block_in_place(|| {
        ml.python(&format!(
            "mlflow.MlflowClient().log_metric({run_id:?}, {key:?}, {value}, timestamp={}, step={step})",
            at.timestamp_millis()
        ))
    });
}

/// Sleep (off the runtime) until `t` has passed.
fn sleep_past(t: DateTime<Utc>) {
    let left = (t - Utc::now()).num_milliseconds() + 300;
    if left > 0 {
        tokio::task::block_in_place(|| std::thread::sleep(std::time::Duration::from_millis(left as u64)));
    }
}

/// MLflow stores the time a client gives with a metric value. The deadline passed with `on_deadline =
/// dispute`; then whoever may write to the run (typically the seller) logged 0.99 with a time before the
/// deadline, and the next `pfsync rules` released the escrow. A value counts toward a deadline only if
/// pfsync saw it by then: this one was seen after it, so the escrow is disputed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_logged_after_the_deadline_with_an_earlier_time_does_not_release_and_the_escrow_is_disputed() {
    let Some(ml) = server() else { return };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("c-bd", "agent-000006", "9.00")]).await;
    let escrow = escrows["c-bd"].clone();
    let run_id = tokio::task::block_in_place(|| ml.run_with("pfsync-rules-backdated", "val_accuracy", &[0.80]));
    let deadline = Utc::now() + chrono::Duration::seconds(8);
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r-bd",
            create_action_id: Some("c-bd"),
            mlflow_run_id: Some(run_id.clone()),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">=",
            deadline: Some(deadline),
            on_deadline: Some("dispute"),
            ..RuleRow::default()
        }],
    )
    .await;
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(Utc::now() < deadline, "the first run ended before the deadline (a slow machine: raise the margin)");
    assert_eq!(escrow_status(&sb, &escrow), "funded");

    // Past the deadline, a value with a time before it.
    sleep_past(deadline);
    log_at(ml, &run_id, "val_accuracy", 0.99, 1, deadline - chrono::Duration::seconds(2));
    for _ in 0..2 {
        let o = run(&mut rules_cmd(&sb, ml, dir.path()));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(escrow_status(&sb, &escrow), "refunded", "disputed, not released: {}", text(&o));
        let keys = paid_per(&sb, PaidBy::Key);
        assert_eq!(keys.get("pfsync:default:escrow_dispute:rule:r-bd").copied(), Some(1), "{keys:?}");
        assert!(!keys.contains_key("pfsync:default:escrow_release:rule:r-bd"), "{keys:?}");
    }
    let reason =
        strings(&wh, "SELECT reason FROM purpleflea.payouts.log WHERE operation_id = 'rule:r-bd' AND event = 'intent'")
            .await;
    assert!(reason[0].contains("passed without metric val_accuracy >= 0.95"), "{reason:?}");
}

/// What the sightings table holds for a rule: (sighting, MLflow run, step, seen_at in microseconds).
async fn sightings(wh: &Warehouse, rule_id: &str) -> Vec<(String, String, String, i64)> {
    let sql = format!(
        "SELECT sighting || '|' || coalesce(mlflow_run_id, '') || '|' || coalesce(CAST(step AS STRING), '') || '|' \
         || CAST(CAST(seen_at AS BIGINT) AS STRING) FROM purpleflea.escrow.rule_sightings WHERE rule_id = '{rule_id}' \
         ORDER BY seen_at"
    );
    strings(wh, &sql)
        .await
        .into_iter()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string(), f[3].parse().unwrap())
        })
        .collect()
}

/// A value pfsync saw by the deadline counts after it: the release it led to was held back (here by the
/// brake) and runs once the deadline has passed. The hit is recorded with the time pfsync first saw it
/// (`purpleflea.escrow.rule_sightings`), before the release was planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_pfsync_saw_by_the_deadline_counts_after_it_with_the_time_it_was_first_seen() {
    let Some(ml) = server() else { return };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("c-held", "agent-000007", "11.00")]).await;
    let escrow = escrows["c-held"].clone();
    let run_id = tokio::task::block_in_place(|| ml.run_with("pfsync-rules-held", "val_accuracy", &[0.80, 0.97]));
    let deadline = Utc::now() + chrono::Duration::seconds(8);
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r-held",
            create_action_id: Some("c-held"),
            mlflow_run_id: Some(run_id.clone()),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">=",
            deadline: Some(deadline),
            on_deadline: Some("dispute"),
            ..RuleRow::default()
        }],
    )
    .await;
    let o = run(rules_cmd(&sb, ml, dir.path()).args(["--max-count", "0"]));
    assert_eq!(o.status.code(), Some(7), "held by the brake: {}", text(&o));
    assert!(Utc::now() < deadline, "the first run ended before the deadline (a slow machine: raise the margin)");
    assert_eq!(escrow_status(&sb, &escrow), "funded");
    let seen = sightings(&wh, "r-held").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (kind, mlflow_run, step, seen_at) = &seen[0];
    assert_eq!((kind.as_str(), mlflow_run, step.as_str()), ("hit", &run_id, "1"), "{seen:?}");
    assert!(*seen_at <= deadline.timestamp_micros(), "{seen:?}");

    sleep_past(deadline);
    for _ in 0..2 {
        let o = run(&mut rules_cmd(&sb, ml, dir.path()));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(escrow_status(&sb, &escrow), "released", "{}", text(&o));
    }
    let keys = paid_per(&sb, PaidBy::Key);
    assert_eq!(keys.get("pfsync:default:escrow_release:rule:r-held").copied(), Some(1), "{keys:?}");
    assert!(!keys.contains_key("pfsync:default:escrow_dispute:rule:r-held"), "{keys:?}");
    let reason = strings(
        &wh,
        "SELECT reason FROM purpleflea.payouts.log WHERE operation_id = 'rule:r-held' AND event = 'intent'",
    )
    .await;
    assert!(reason[0].contains(&format!("MLflow run {run_id} metric val_accuracy = 0.97 at step 1")), "{reason:?}");
    assert_eq!(sightings(&wh, "r-held").await, seen, "recorded once");
}

/// A search rule counts the runs of its experiment that started after pfsync first read it (unless it
/// says `runs_since`), and never a deleted run: anyone who can create a run in the experiment could make
/// one that matches. A run made before the rule, and a new one deleted, do not fire it; a new run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_rule_counts_only_runs_started_after_it_and_never_a_deleted_one() {
    let Some(ml) = server() else { return };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("c-new", "agent-000008", "13.00")]).await;
    let escrow = escrows["c-new"].clone();
    let name = "pfsync-rules-new-runs";
    let old = tokio::task::block_in_place(|| ml.run_with(name, "val_accuracy", &[0.99]));
    let experiment = tokio::task::block_in_place(|| {
        ml.python(&format!("print(mlflow.MlflowClient().get_experiment_by_name({name:?}).experiment_id)"))
    });
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r-new",
            create_action_id: Some("c-new"),
            experiment_id: Some(experiment.clone()),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">=",
            ..RuleRow::default()
        }],
    )
    .await;
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(escrow_status(&sb, &escrow), "funded", "a run made before the rule does not count");
    let seen = sightings(&wh, "r-new").await;
    assert_eq!(seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["rule"], "{seen:?}");

    let deleted = tokio::task::block_in_place(|| {
        let id = ml.run_with(name, "val_accuracy", &[0.99]);
        ml.python(&format!("mlflow.MlflowClient().delete_run({id:?})"));
        id
    });
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(escrow_status(&sb, &escrow), "funded", "a deleted run does not count");

    let fresh = tokio::task::block_in_place(|| ml.run_with(name, "val_accuracy", &[0.90, 0.96]));
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(escrow_status(&sb, &escrow), "released", "{}", text(&o));
    let tags: HashMap<String, String> =
        tokio::task::block_in_place(|| ml.purpleflea_tags(&fresh)).into_iter().collect();
    assert_eq!(tags.get("purpleflea.rule_id").map(String::as_str), Some("r-new"), "{tags:?}");
    for other in [&old, &deleted] {
        assert!(tokio::task::block_in_place(|| ml.purpleflea_tags(other)).is_empty(), "{other}");
    }
    let seen = sightings(&wh, "r-new").await;
    assert_eq!(seen.iter().map(|s| (s.0.as_str(), s.1.as_str())).collect::<Vec<_>>(), [("rule", ""), ("hit", &fresh)]);
}

/// The rules step is bounded. A tracking server that accepts connections and never answers holds it no
/// longer than --rules-max-secs (the HTTP client alone would wait out four 30 s attempts): the rule is left
/// to the next run (exit 5) and `pfsync run` goes on to its payouts step. A search rule that needs more
/// MLflow pages than --rules-max-pages is left over the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_step_is_bounded_in_time_and_pages_and_run_goes_on_past_it() {
    let Some(ml) = server() else { return };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("c-slow", "agent-000009", "5.00")]).await;
    crate::payouts::write_pending(&wh, &[("p-after", "agent-000003", "1.00", "paid after the rules step")]).await;
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r-slow",
            create_action_id: Some("c-slow"),
            mlflow_run_id: Some("0123456789abcdef0123456789abcdef".into()),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">=",
            ..RuleRow::default()
        }],
    )
    .await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let o = run(command(&sb, ml, dir.path(), &["run", "--steps", "rules,payouts", "--rules-max-secs", "2"])
        .env("MLFLOW_TRACKING_URI", format!("http://{addr}")));
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}: {}", text(&o));
    assert!(text(&o).contains("1 rule(s) not decided in this run"), "{}", text(&o));
    assert_eq!(
        paid_per(&sb, PaidBy::Key).get("pfsync:default:payout:p-after").copied(),
        Some(1),
        "the payouts step ran"
    );
    assert_eq!(escrow_status(&sb, &escrows["c-slow"]), "funded");

    // Pages: three runs need a search page and three history pages; two are allowed.
    let name = "pfsync-rules-pages";
    tokio::task::block_in_place(|| ml.runs_with(name, "val_accuracy", &[vec![0.5], vec![0.5], vec![0.5]]));
    let experiment = tokio::task::block_in_place(|| {
        ml.python(&format!("print(mlflow.MlflowClient().get_experiment_by_name({name:?}).experiment_id)"))
    });
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    create_escrows(&sb, &wh, &[("c-pages", "agent-000002", "4.00")]).await;
    write_rules(
        &wh,
        &[RuleRow {
            rule_id: "r-pages",
            create_action_id: Some("c-pages"),
            experiment_id: Some(experiment),
            runs_since: Some(Utc::now() - chrono::Duration::hours(1)),
            metric_key: "val_accuracy",
            threshold: Some(0.95),
            direction: ">=",
            ..RuleRow::default()
        }],
    )
    .await;
    let o = run(rules_cmd(&sb, ml, dir.path()).args(["--rules-max-pages", "2"]));
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("r-pages"), "{}", text(&o));
    let o = run(&mut rules_cmd(&sb, ml, dir.path()));
    assert_eq!(o.status.code(), Some(0), "within the default cap: {}", text(&o));
}
