//! `pfsync maintain`: compaction, checkpoint, and a vacuum that respects the 7-day floor and the audit
//! tables' declared retention.

use pfsync::maintain::{MaintainOptions, maintain_all};
use pfsync::progress::Progress;
use pfsync::provider::records::{Transaction, Wallet};
use pfsync::sync::{SyncOptions, sync_table};
use pfsync::tables::{CommitInfo, TRANSACTIONS, WALLETS, open_existing};

use crate::common::{PfsyncCommand, client, pfsync, sandbox, usd, warehouse};

#[tokio::test]
async fn ten_incremental_appends_compact_into_few_files_and_stay_readable() {
    let sb = sandbox(50).await;
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let commit = CommitInfo { run_id: "m".into(), step: "sync" };
    for round in 0..10 {
        sb.ledger().payout(&format!("agent-{:06}", round + 1), usd("1"), "round", None).unwrap();
        sync_table::<Transaction>(&c, &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.unwrap();
        sync_table::<Wallet>(&c, &wh, &commit, &SyncOptions::default(), &Progress::hidden()).await.unwrap();
    }
    let files = |t: &deltalake::DeltaTable| t.get_file_uris().unwrap().count();
    let before = files(&open_existing(&wh, &TRANSACTIONS).await.unwrap().unwrap());
    assert!(before >= 10, "one file per incremental append: {before}");

    let opts = MaintainOptions { retention_hours: 168, i_know: false, dry_run: false };
    let reports = maintain_all(&wh, &opts, &CommitInfo { run_id: "m".into(), step: "maintain" }).await.unwrap();
    let tx = reports.iter().find(|r| r.table == TRANSACTIONS.name).unwrap();
    assert!(tx.files_removed >= 10 && tx.files_added <= 2, "{tx}");
    assert_eq!(tx.vacuumed, 0, "nothing is older than the retention: {tx}");
    assert_eq!(tx.retention_hours, 365 * 24, "the audit table's own retention wins: {tx}");
    let table = open_existing(&wh, &TRANSACTIONS).await.unwrap().unwrap();
    assert!(files(&table) <= 2);
    let log = dir.path().join("purpleflea/ledger/transactions/_delta_log");
    assert!(
        std::fs::read_dir(&log).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".checkpoint.")),
        "a checkpoint was written"
    );
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let n = crate::common::count(&ctx, "SELECT count(*) FROM purpleflea.ledger.transactions").await;
    assert_eq!(n as usize, sb.ledger().transactions().count());

    // With --i-know and no retention: the wallets' replaced files go, the audit table keeps its year.
    let opts = MaintainOptions { retention_hours: 0, i_know: true, dry_run: false };
    let reports = maintain_all(&wh, &opts, &CommitInfo { run_id: "m".into(), step: "maintain" }).await.unwrap();
    let w = reports.iter().find(|r| r.table == WALLETS.name).unwrap();
    let t = reports.iter().find(|r| r.table == TRANSACTIONS.name).unwrap();
    assert!(w.vacuumed > 0, "{w}");
    assert_eq!(t.vacuumed, 0, "{t}");
}

#[test]
fn a_short_retention_is_refused_without_i_know() {
    let dir = tempfile::tempdir().unwrap();
    let out = pfsync().args(["maintain", "--retention-hours", "24"]).warehouse(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--i-know"));
}
