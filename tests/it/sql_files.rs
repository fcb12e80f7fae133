//! `sql/` is part of the code: every DDL file matches its table's declaration, and every analyst query
//! runs against tables the job wrote.

use std::path::Path;

use pfsync::progress::Progress;
use pfsync::provider::records::{Escrow, Transaction, Wallet};
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{ALL, CommitInfo, ddl, sql_context};

use crate::common::{client, sandbox, warehouse};

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A file in `sql/` is a header of `--` comment lines written by hand, then text the code generates.
fn header_and_body(text: &str) -> (String, String) {
    let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("--")).collect();
    let header = header.iter().map(|l| format!("{l}\n")).collect::<String>();
    let body = text[header.len()..].to_string();
    (header, body)
}

/// `sql/<rel>` is `generated` after its header; with PFSYNC_BLESS_SQL=1 the file is rewritten to it instead.
fn check_generated(rel: &str, generated: &str) {
    let path = repo(&format!("sql/{rel}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (header, body) = header_and_body(&text);
    if std::env::var_os("PFSYNC_BLESS_SQL").is_some() {
        std::fs::write(&path, format!("{header}{generated}")).unwrap();
        return;
    }
    assert_eq!(
        body, generated,
        "sql/{rel} drifted from the code that generates it (src/tables/ddl.rs); PFSYNC_BLESS_SQL=1 cargo test --test \
         it sql_files rewrites it"
    );
}

#[test]
fn every_table_has_a_ddl_file_generated_from_its_declaration() {
    for spec in ALL {
        let n = spec.table_name();
        let location = format!("{}/{}/{}/{}", ddl::WAREHOUSE_PLACEHOLDER, n.catalog, n.schema, n.table);
        check_generated(&format!("ddl/{}.sql", spec.name), &ddl::table(spec, &location));
    }
    // And no DDL file describes a table the code does not own.
    for entry in std::fs::read_dir(repo("sql/ddl")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let table = name.trim_end_matches(".sql");
        assert!(ALL.iter().any(|s| s.name == table), "sql/ddl/{name} has no table in src/tables/spec.rs");
    }
    check_generated("grants.sql", &ddl::grants(&ddl::Grantees::default()));
}

/// Databricks SQL is written with STRING; VARCHAR(n) there is a different, length-checked type.
#[test]
fn no_sql_file_uses_varchar() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "sql") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo("sql"), &mut files);
    assert!(files.len() > 20, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap().to_uppercase();
        assert!(!text.contains("VARCHAR"), "{} uses VARCHAR: write STRING", path.display());
    }
}

/// What a Databricks SQL script holds, by kind of statement.
#[derive(Debug, Default)]
struct Statements {
    schemas: Vec<String>,
    /// `(table, LOCATION)`.
    tables: Vec<(String, String)>,
    views: usize,
    grants: Vec<String>,
}

/// Check a script statement by statement with sqlparser's Databricks dialect (the one DataFusion brings).
/// sqlparser 0.62 lacks two parts of Databricks' grammar that registration needs, and those are checked
/// against Databricks' grammar here while the rest of each statement is parsed: `USING DELTA` and several
/// table clauses in one CREATE TABLE (each clause is parsed on its own instead), and Unity Catalog's
/// privileges and securables (`USE CATALOG`, `USE SCHEMA`, `EXTERNAL USE SCHEMA`, `ON CATALOG`: checked
/// against the privileges Databricks documents for each securable, then parsed as `USAGE ... ON DATABASE`).
fn check_databricks_sql(script: &str) -> Statements {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::{dialect::DatabricksDialect, parser::Parser};
    let parse = |sql: &str| -> Statement {
        let mut v = Parser::parse_sql(&DatabricksDialect {}, sql).unwrap_or_else(|e| panic!("{e}:\n{sql}"));
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0)
    };
    let code: String = script.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    let mut found = Statements::default();
    for stmt in code.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(rest) = stmt.strip_prefix("CREATE TABLE ") {
            let (head, clauses) = stmt.split_once("\n)\n").unwrap_or_else(|| panic!("no column list:\n{stmt}"));
            let Statement::CreateTable(table) = parse(&format!("{head}\n)")) else { panic!("{stmt}") };
            let columns: Vec<String> = table.columns.iter().map(|c| c.name.value.clone()).collect();
            let mut lines = clauses.lines();
            assert_eq!(lines.next(), Some("USING DELTA"), "{rest}");
            let mut clause_texts: Vec<String> = Vec::new();
            for line in lines {
                let starts = ["PARTITIONED BY (", "LOCATION '", "COMMENT '", "TBLPROPERTIES ("];
                match clause_texts.last_mut() {
                    Some(last) if !starts.iter().any(|s| line.starts_with(s)) => {
                        last.push('\n');
                        last.push_str(line);
                    }
                    _ => clause_texts.push(line.to_string()),
                }
            }
            let mut location = None;
            let mut kinds = Vec::new();
            for clause in &clause_texts {
                parse(&format!("CREATE TABLE t (c INT) {clause}"));
                let kind = clause.split([' ', '(']).next().unwrap().to_string();
                assert!(!kinds.contains(&kind), "{kind} twice in {rest}");
                kinds.push(kind);
                if let Some(p) = clause.strip_prefix("PARTITIONED BY (") {
                    for c in p.trim_end_matches(')').split(", ") {
                        assert!(columns.iter().any(|x| x == c), "partition column {c} is a column: {rest}");
                    }
                }
                if let Some(l) = clause.strip_prefix("LOCATION '") {
                    location = Some(l.trim_end_matches('\'').to_string());
                }
            }
            let location = location.unwrap_or_else(|| panic!("no LOCATION: an external table needs one:\n{stmt}"));
            found.tables.push((table.name.to_string(), location));
        } else if let Some(grant) = stmt.strip_prefix("GRANT ") {
            let (privileges, rest) = grant.split_once(" ON ").unwrap_or_else(|| panic!("{stmt}"));
            let (securable, rest) = rest.split_once(' ').unwrap();
            let allowed: &[&str] = match securable {
                "CATALOG" => &["USE CATALOG", "BROWSE", "SELECT", "MODIFY", "USE SCHEMA", "EXTERNAL USE SCHEMA"],
                "SCHEMA" => &["USE SCHEMA", "EXTERNAL USE SCHEMA", "SELECT", "MODIFY", "CREATE TABLE"],
                "TABLE" => &["SELECT", "MODIFY"],
                "VIEW" => &["SELECT"],
                other => panic!("securable {other} in {stmt}"),
            };
            for p in privileges.split(", ") {
                assert!(allowed.contains(&p), "{p} is not a privilege on a {securable}: {stmt}");
            }
            let known = privileges.replace("EXTERNAL USE SCHEMA", "USAGE").replace("USE CATALOG", "USAGE");
            let known = known.replace("USE SCHEMA", "USAGE");
            let securable = if securable == "CATALOG" { "DATABASE" } else { securable };
            assert!(matches!(parse(&format!("GRANT {known} ON {securable} {rest}")), Statement::Grant(_)), "{stmt}");
            found.grants.push(stmt.to_string());
        } else {
            match parse(stmt) {
                Statement::CreateSchema { schema_name, if_not_exists: true, .. } => {
                    found.schemas.push(schema_name.to_string())
                }
                Statement::CreateView(v) if v.or_replace => found.views += 1,
                other => panic!("unexpected statement in a Databricks script: {other}"),
            }
        }
    }
    found
}

/// `pfsync ddl --warehouse s3://b/w` registers every table as an external table at its place in the
/// warehouse, with the views and the grants, and all of it is Databricks SQL; the files in sql/ are the
/// same text.
#[test]
fn ddl_for_a_warehouse_has_a_location_for_every_table_and_parses_as_databricks_sql() {
    let ddl_out = |args: &[&str]| crate::common::pfsync().args(args).output().unwrap();
    let out = ddl_out(&["--warehouse", "s3://b/w", "ddl"]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{script}{}", String::from_utf8_lossy(&out.stderr));
    let found = check_databricks_sql(&script);
    assert_eq!(found.tables.len(), ALL.len(), "{found:?}");
    for spec in ALL {
        let n = spec.table_name();
        let location = format!("s3://b/w/{}/{}/{}", n.catalog, n.schema, n.table);
        assert!(found.tables.contains(&(spec.name.to_string(), location)), "{}: {found:?}", spec.name);
        // The file in sql/ddl/ is the same statement for a placeholder warehouse.
        let file = std::fs::read_to_string(repo(&format!("sql/ddl/{}.sql", spec.name))).unwrap();
        let body = header_and_body(&file).1.replace(ddl::WAREHOUSE_PLACEHOLDER, "s3://b/w");
        assert!(script.contains(&body), "{} as in sql/ddl/", spec.name);
    }
    assert_eq!(
        found.schemas,
        ["purpleflea.agents", "purpleflea.ledger", "purpleflea.payouts", "purpleflea.escrow", "purpleflea.ops"]
    );
    assert_eq!(found.views, pfsync::tables::store::VIEWS.len());
    let grants = header_and_body(&std::fs::read_to_string(repo("sql/grants.sql")).unwrap()).1;
    assert!(script.ends_with(&grants), "the grants are sql/grants.sql");
    let has = |g: &str| found.grants.iter().any(|x| x == g);
    assert!(has("GRANT MODIFY ON TABLE purpleflea.payouts.log TO `pfsync-job`"));
    assert!(!has("GRANT MODIFY ON TABLE purpleflea.payouts.pending TO `pfsync-job`"), "pfsync only reads the sources");
    assert!(has("GRANT SELECT ON VIEW purpleflea.payouts.status TO `pfsync-readers`"));
    assert!(has("GRANT EXTERNAL USE SCHEMA ON SCHEMA purpleflea.payouts TO `pfsync-job`"));

    // Principals of one's own, no credential vending; a principal with a newline is refused.
    let out = ddl_out(&[
        "--warehouse",
        "abfss://c@a.dfs.core.windows.net/w",
        "ddl",
        "--readers",
        "analysts@example.com",
        "--job-principal",
        "6f1c0d2e-app-id",
        "--no-credential-vending",
    ]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    let found = check_databricks_sql(&script);
    assert!(found.grants.iter().any(|g| g == "GRANT SELECT ON TABLE purpleflea.ops.runs TO `analysts@example.com`"));
    assert!(found.grants.iter().any(|g| g == "GRANT MODIFY ON TABLE purpleflea.ops.runs TO `6f1c0d2e-app-id`"));
    assert!(!script.contains("EXTERNAL USE SCHEMA"));
    assert!(found.tables.iter().all(|(_, l)| l.starts_with("abfss://c@a.dfs.core.windows.net/w/purpleflea/")));
    let out = ddl_out(&["ddl", "--readers", "a\nb"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    // Without a cloud warehouse, LOCATION is a placeholder Unity Catalog refuses, and the script says so.
    let dir = tempfile::tempdir().unwrap();
    let out = ddl_out(&["--warehouse", &dir.path().to_string_lossy(), "ddl"]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && script.contains("pfsync ddl --warehouse"), "{script}");
    let found = check_databricks_sql(&script);
    assert!(found.tables.iter().all(|(_, l)| l.starts_with("<warehouse>/purpleflea/")), "{found:?}");
}

#[tokio::test]
async fn every_analyst_query_runs_against_synced_tables() {
    let sb = sandbox(200).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let commit = CommitInfo { run_id: "sql-files".into(), step: "sync.wallets" };
    sync_table::<Wallet>(&client(&sb), &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.unwrap();
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

    let sb = sandbox(30).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::payouts::write_pending(&wh, &[("a-1", "agent-000001", "1.00", "r"), ("a-2", "agent-000001", "2.00", "r")])
        .await;
    let p = Progress::hidden();
    let run = CommitInfo { run_id: "audit-run".into(), step: "payouts" };
    sync_table::<Wallet>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    run_payouts(&pfsync::provider::seed::SeedProvider::new(c.clone(), true), &wh, &run, &PayoutOptions::default(), &p)
        .await
        .unwrap();
    // A keyless repeat of a-1: an open finding for the auditor queries to show.
    c.payout(
        &pfsync::provider::seed::wire::PayoutRequest {
            agent_id: "agent-000001".into(),
            amount_usd: crate::common::usd("1.00"),
            reason: "r".into(),
        },
        None,
    )
    .await
    .unwrap();
    sync_table::<Wallet>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    sync_table::<Escrow>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    sync_table::<Transaction>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
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
        assert_eq!(check_databricks_sql(&text).views, 1, "{}", path.display());
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
    run_payouts(&pfsync::provider::seed::SeedProvider::new(c.clone(), true), &wh, &run, &PayoutOptions::default(), &p)
        .await
        .unwrap();
    // A keyless repeat of r-1, so the finding queries have a row to return.
    c.payout(
        &pfsync::provider::seed::wire::PayoutRequest {
            agent_id: "agent-000001".into(),
            amount_usd: crate::common::usd("1.00"),
            reason: "r".into(),
        },
        None,
    )
    .await
    .unwrap();
    sync_table::<Wallet>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    sync_table::<Escrow>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
    sync_table::<Transaction>(&c, &wh, &run, &SyncOptions::default(), &p).await.unwrap();
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
