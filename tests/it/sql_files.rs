//! `sql/` is part of the code: every DDL file matches its table's declaration, and every analyst query
//! runs against tables the job wrote.

use std::path::Path;

use pfsync::progress::Progress;
use pfsync::sync::{SyncOptions, sync_wallets};
use pfsync::tables::{ALL, CommitInfo, ddl, sql_context};

use crate::common::{client, sandbox, warehouse};

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn every_table_has_a_ddl_file_that_matches_its_declaration() {
    for spec in ALL {
        let path = repo(&format!("sql/ddl/{}.sql", spec.name));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = ddl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let code = ddl::parse(&ddl::render(spec)).unwrap();
        assert_eq!(
            file,
            code,
            "{} drifted from src/tables/spec.rs (`pfsync ddl` prints the current DDL)",
            path.display()
        );
    }
    // And no DDL file describes a table the code does not own.
    for entry in std::fs::read_dir(repo("sql/ddl")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let table = name.trim_end_matches(".sql");
        assert!(ALL.iter().any(|s| s.name == table), "sql/ddl/{name} has no table in src/tables/spec.rs");
    }
}

#[tokio::test]
async fn every_analyst_query_runs_against_synced_tables() {
    let sb = sandbox(200).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let commit = CommitInfo { run_id: "sql-files".into(), step: "sync.wallets" };
    sync_wallets(&client(&sb), &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    // The sync step's record, as `pfsync sync` writes it: the freshness view and the queries on it read it.
    crate::common::record_step(&wh, "fresh-run", "sync", 201, 0).await;
    let ctx = sql_context(&wh).await.unwrap();
    let mut ran = 0;
    for entry in std::fs::read_dir(repo("sql/analyst")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let batches = ctx
            .sql(&text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0, "{} returned rows", path.display());
        ran += 1;
    }
    assert!(ran >= 2);

    // The freshness view: every wallet, and the clean sync step that last confirmed them.
    let b = ctx
        .sql(
            "SELECT CAST(wallets AS VARCHAR) AS w, last_clean_sync_run, last_changed_at <= checked_at AS ok \
              FROM purpleflea.agents.wallet_freshness",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row = arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
    assert!(row.contains("| 201 | fresh-run           | true |"), "{row}");
}

/// The auditors' queries run against tables the job wrote (payouts, a planted finding, reconcile); the
/// Databricks-only ones (DESCRIBE HISTORY, VERSION AS OF) are parsed with the Databricks dialect, and time
/// travel itself is checked through delta-rs.
#[tokio::test]
async fn every_auditor_query_runs_against_tables_the_job_wrote() {
    use datafusion::sql::sqlparser::{dialect::DatabricksDialect, parser::Parser};
    use pfsync::payouts::{PayoutOptions, run_payouts};
    use pfsync::reconcile::{ReconcileOptions, reconcile};
    use pfsync::sync::{sync_escrows, sync_transactions};

    let sb = sandbox(30).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::payouts::write_pending(&wh, &[("a-1", "agent-000001", "1.00", "r"), ("a-2", "agent-000001", "2.00", "r")])
        .await;
    let p = Progress::hidden();
    let run = CommitInfo { run_id: "audit-run".into(), step: "payouts" };
    sync_wallets(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    run_payouts(&pfsync::provider::SeedProvider::new(c.clone(), true), &wh, &run, &PayoutOptions::default(), &p)
        .await
        .unwrap();
    // A keyless repeat of a-1: an open finding for the auditor queries to show.
    c.payout(
        &pfsync::api::PayoutRequest {
            agent_id: "agent-000001".into(),
            amount_usd: crate::common::usd("1.00"),
            reason: "r".into(),
        },
        None,
    )
    .await
    .unwrap();
    sync_wallets(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    sync_escrows(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    sync_transactions(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    let rec = CommitInfo { run_id: "audit-run".into(), step: "reconcile" };
    let report = reconcile(&wh, &rec, &ReconcileOptions::default()).await.unwrap();
    assert_eq!(report.open().count(), 1);
    crate::common::record_step(&wh, "audit-run", "reconcile", 2, 8).await;

    let ctx = sql_context(&wh).await.unwrap();
    let mut ran = 0;
    for entry in std::fs::read_dir(repo("sql/auditor")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.to_string_lossy().ends_with(".databricks.sql") {
            let body: String = text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join(" ");
            match body.trim().strip_prefix("DESCRIBE HISTORY ") {
                // sqlparser has no DESCRIBE HISTORY; its only argument is a table, which must be ours.
                Some(table) => {
                    assert!(ALL.iter().any(|s| s.name == table.trim().trim_end_matches(';')), "{}", path.display())
                }
                None => {
                    Parser::parse_sql(&DatabricksDialect {}, &text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
            }
            continue;
        }
        let sql = text.replace("RUN_ID", "audit-run");
        let batches = ctx
            .sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0, "{} returned rows", path.display());
        ran += 1;
    }
    assert_eq!(ran, 3);

    // Time travel: the log at version 1 (the first intents) is still readable as it was.
    let url = wh.location(&pfsync::tables::PAYOUT_LOG.table_name());
    let mut old = deltalake::DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
    old.load_version(1).await.unwrap();
    let t = old.table_provider().await.unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    old.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("log_v1", t).unwrap();
    let b = ctx.sql("SELECT count(*) FROM log_v1 WHERE event = 'intent'").await.unwrap().collect().await.unwrap();
    assert_eq!(b[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0), 2);
}

/// The views are deployed to Databricks as they are: each file parses in the Databricks dialect too (it
/// runs in DataFusion in every `sql_context`).
#[test]
fn every_view_parses_as_databricks_sql() {
    use datafusion::sql::sqlparser::{dialect::DatabricksDialect, parser::Parser};
    let mut n = 0;
    for entry in std::fs::read_dir(repo("sql/views")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        Parser::parse_sql(&DatabricksDialect {}, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        assert!(pfsync::tables::store::VIEWS.iter().any(|(v, _)| *v == name), "{name} is registered in VIEWS");
        n += 1;
    }
    assert_eq!(n, pfsync::tables::store::VIEWS.len());
}
