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

/// The reconcile queries are compiled in from `sql/reconcile/` (`include_str!`), exactly the files there, each
/// saying in its header that it is DataFusion SQL; and each runs, with its parameters bound, against tables
/// the job wrote (payouts, syncs and a reconcile that found a keyless repeat).
#[tokio::test]
async fn every_reconcile_query_is_compiled_in_and_runs_against_tables_the_job_wrote() {
    use pfsync::payouts::{PayoutOptions, run_payouts};
    use pfsync::reconcile::matching::{self, Params, QUERIES};
    use pfsync::reconcile::{ReconcileOptions, reconcile};
    use pfsync::sync::{sync_escrows, sync_transactions};

    let mut files = Vec::new();
    for entry in std::fs::read_dir(repo("sql/reconcile")).unwrap() {
        let path = entry.unwrap().path();
        let rel = format!("sql/reconcile/{}", path.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&path).unwrap();
        let query = QUERIES.iter().find(|q| q.file == rel).unwrap_or_else(|| panic!("{rel} is not in QUERIES"));
        assert_eq!(query.sql, text, "{rel} is the text compiled in");
        let header: String = text.lines().take_while(|l| l.starts_with("--")).collect::<Vec<_>>().join(" ");
        assert!(header.contains("DataFusion SQL"), "{rel} says in its header where it runs");
        files.push(rel);
    }
    assert_eq!(files.len(), QUERIES.len(), "every query in QUERIES has its file");

    let sb = sandbox(30).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::payouts::write_pending(&wh, &[("r-1", "agent-000001", "1.00", "r"), ("r-2", "agent-000002", "2.00", "r")])
        .await;
    let p = Progress::hidden();
    let run = CommitInfo { run_id: "reconcile-sql".into(), step: "payouts" };
    run_payouts(&pfsync::provider::SeedProvider::new(c.clone(), true), &wh, &run, &PayoutOptions::default(), &p)
        .await
        .unwrap();
    // A keyless repeat of r-1, so the finding queries have a row to return.
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
    let rec = CommitInfo { run_id: "reconcile-sql".into(), step: "reconcile" };
    let report = reconcile(&wh, &rec, &ReconcileOptions::default()).await.unwrap();
    assert_eq!(report.open().count(), 1, "{}", pfsync::reconcile::report::text(&report));

    let ctx = sql_context(&wh).await.unwrap();
    let params =
        Params { stale_before: chrono::Utc::now() - chrono::Duration::hours(1), key_prefix: "pfsync:default:".into() };
    matching::register_classified(&ctx, &params).await.unwrap();
    for query in QUERIES {
        let batches = matching::collect(&ctx, query, &params).await.unwrap_or_else(|e| panic!("{e}"));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        // The totals and the previous run's finding are there; other findings are not.
        if ["class_counts", "matched_total", "provider_transactions", "daily_totals", "previous_open"]
            .iter()
            .any(|n| query.file.ends_with(&format!("/{n}.sql")))
        {
            assert!(rows > 0, "{} returned rows", query.file);
        }
    }
}
