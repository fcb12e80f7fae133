//! `sql/examples/`: the seed's labeling bounty as SQL over a label_submissions table into escrow actions,
//! run through the engine against the sandbox.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::{DataType as DeltaType, StructField};
use pfsync::payouts::{PayoutOptions, run_payouts};
use pfsync::progress::Progress;
use pfsync::sandbox::{Sandbox, SandboxConfig, SeedConfig};
use pfsync::tables::CommitInfo;

use crate::common::{client, warehouse};

async fn table(path: &std::path::Path, columns: &[(&str, DataType)], data: Vec<ArrayRef>) -> url::Url {
    std::fs::create_dir_all(path).unwrap();
    let url = url::Url::from_directory_path(path).unwrap();
    let delta = |t: &DataType| if *t == DataType::Float64 { DeltaType::DOUBLE } else { DeltaType::STRING };
    let t = deltalake::operations::create::CreateBuilder::new()
        .with_location(url.as_str())
        .with_columns(columns.iter().map(|(n, t)| StructField::new(n.to_string(), delta(t), true)))
        .await
        .unwrap();
    let schema =
        Arc::new(Schema::new(columns.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()));
    t.write(vec![RecordBatch::try_new(schema, data).unwrap()]).await.unwrap();
    url
}

fn text(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

#[tokio::test]
async fn the_labeling_bounty_example_creates_releases_and_disputes_each_once() {
    let sb = Sandbox::start(SandboxConfig {
        world: SeedConfig { agents: 10, escrows: Some(0), ..Default::default() },
        ..SandboxConfig::for_tests(10)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let s = DataType::Utf8;
    let tasks = table(
        &dir.path().join("label_tasks"),
        &[
            ("task_id", s.clone()),
            ("labeler_agent_id", s.clone()),
            ("reward_usd", s.clone()),
            ("labels_done", s.clone()),
        ],
        vec![
            text(&["t1", "t2", "t3"]),
            text(&["agent-000001", "agent-000002", "agent-000003"]),
            text(&["25.00", "30.00", "10.00"]),
            text(&["true", "true", "false"]),
        ],
    )
    .await;
    let labels =
        [("t1", 0.9), ("t1", 0.95), ("t1", 0.88), ("t1", 0.86), ("t1", 0.5), ("t2", 0.9), ("t2", 0.5), ("t2", 0.6)];
    let submissions = table(
        &dir.path().join("label_submissions"),
        &[("task_id", s.clone()), ("label_id", s.clone()), ("confidence", DataType::Float64)],
        vec![
            text(&labels.iter().map(|l| l.0).collect::<Vec<_>>()),
            Arc::new(StringArray::from((0..labels.len()).map(|i| format!("l{i}")).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(labels.iter().map(|l| l.1).collect::<Vec<_>>())),
        ],
    )
    .await;
    let opts = PayoutOptions {
        action_sql: Some(include_str!("../../sql/examples/labeling_bounty.sql").into()),
        extra_tables: vec![("label_tasks".into(), tasks), ("label_submissions".into(), submissions)],
        ..PayoutOptions::default()
    };
    let provider = pfsync::provider::seed::SeedProvider::new(client(&sb), true);
    let commit = CommitInfo { run_id: "bounty-1".into(), step: "payouts" };
    let r = run_payouts(&provider, &wh, &commit, &opts, &Progress::hidden()).await.unwrap();
    assert_eq!((r.completed, r.rejected_rows, r.waiting), (5, 0, 0), "{r}");
    {
        let l = sb.ledger();
        let status = |seller: &str| {
            l.escrows().find(|e| e.seller_agent_id == seller).map(|e| e.status.as_str().to_string()).unwrap()
        };
        assert_eq!(status("agent-000001"), "released", "4 of 5 labels >= 0.85: 80% passes");
        assert_eq!(status("agent-000002"), "refunded", "1 of 3: disputed");
        assert_eq!(status("agent-000003"), "funded", "labels not done yet");
    }
    let commit = CommitInfo { run_id: "bounty-2".into(), step: "payouts" };
    let again = run_payouts(&provider, &wh, &commit, &opts, &Progress::hidden()).await.unwrap();
    assert_eq!((again.completed, again.already_final), (0, 5), "{again}");
}

/// The README's command as a user types it: the example file's text (it starts with a `--` comment) as the
/// value of `--actions-sql`, then the file itself through `--actions-sql-file`, which finds nothing new.
#[tokio::test(flavor = "multi_thread")]
async fn the_labeling_bounty_runs_through_the_binary_with_its_leading_comment() {
    use crate::common::{PfsyncCommand, output_in_place, pfsync, text};
    let sb = Sandbox::start(SandboxConfig {
        world: SeedConfig { agents: 10, escrows: Some(0), ..Default::default() },
        ..SandboxConfig::for_tests(10)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = DataType::Utf8;
    let tasks = table(
        &dir.path().join("label_tasks"),
        &[
            ("task_id", s.clone()),
            ("labeler_agent_id", s.clone()),
            ("reward_usd", s.clone()),
            ("labels_done", s.clone()),
        ],
        vec![
            text_array(&["t1", "t2"]),
            text_array(&["agent-000001", "agent-000002"]),
            text_array(&["25.00", "30.00"]),
            text_array(&["true", "true"]),
        ],
    )
    .await;
    let submissions = table(
        &dir.path().join("label_submissions"),
        &[("task_id", s.clone()), ("label_id", s.clone()), ("confidence", DataType::Float64)],
        vec![
            text_array(&["t1", "t1", "t2", "t2"]),
            text_array(&["l1", "l2", "l3", "l4"]),
            Arc::new(Float64Array::from(vec![0.9, 0.95, 0.5, 0.9])),
        ],
    )
    .await;
    let wh = dir.path().join("warehouse");
    let run = |args: &[String]| {
        let mut c = pfsync();
        c.warehouse(&wh).sandbox(&sb).arg("-q").args(args);
        output_in_place(&mut c)
    };
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/examples/labeling_bounty.sql");
    let query = std::fs::read_to_string(file).unwrap();
    assert!(query.starts_with("-- "), "the example starts with a comment");
    let register = vec![
        "--register".to_string(),
        format!("label_tasks={tasks}"),
        "--register".to_string(),
        format!("label_submissions={submissions}"),
    ];
    for step in [vec!["init".to_string()], vec!["sync".to_string(), "wallets".to_string()]] {
        let o = run(&step);
        assert_eq!(o.status.code(), Some(0), "{step:?}: {}", text(&o));
    }
    let mut first = vec!["payouts".to_string(), "--actions-sql".to_string(), query];
    first.extend(register.clone());
    let o = run(&first);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    {
        let l = sb.ledger();
        let status = |seller: &str| {
            l.escrows().find(|e| e.seller_agent_id == seller).map(|e| e.status.as_str().to_string()).unwrap()
        };
        assert_eq!((status("agent-000001"), status("agent-000002")), ("released".into(), "refunded".into()));
    }
    let executed = sb.stats().executed;
    let mut again = vec!["payouts".to_string(), "--actions-sql-file".to_string(), file.to_string()];
    again.extend(register);
    let o = run(&again);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sb.stats().executed, executed, "the same actions, already final: nothing sent");
}

fn text_array(v: &[&str]) -> ArrayRef {
    text(v)
}
