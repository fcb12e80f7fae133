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
    assert!(ran >= 1);
}
