//! A warehouse an earlier pfsync wrote: its own tables gain the columns this version writes, once, the rows
//! already there keep their values and read the new columns as null, and a table changed any other way is
//! still refused.

use pfsync::tables::{CommitInfo, PAYOUT_LOG, Warehouse, open_existing, open_or_create, sql_context};

use crate::common::{count, warehouse};

/// The payout log as the previous version declared it: every column up to `recorded_date`.
async fn old_log(wh: &Warehouse, extra: Option<deltalake::kernel::StructField>) {
    let old: Vec<_> = PAYOUT_LOG.delta_columns().into_iter().take_while(|c| c.name() != "payer_agent_id").collect();
    assert_eq!(old.len(), 17, "the log had 17 columns before");
    let url = wh.location(&PAYOUT_LOG.table_name());
    std::fs::create_dir_all(url.to_file_path().unwrap()).unwrap();
    let t = deltalake::DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
    let n = old.len();
    let t =
        t.create().with_columns(old.into_iter().chain(extra)).with_partition_columns(["recorded_date"]).await.unwrap();
    if t.snapshot().unwrap().schema().fields().count() != n {
        return;
    }
    // One event, as the earlier version wrote it (its columns only).
    let at = chrono::Utc::now();
    let e = pfsync::payouts::log::LogEvent {
        agent_id: Some("agent-1".into()),
        amount_usd: Some(pfsync::money::Usd::from_cents(150).unwrap()),
        reason: Some("r".into()),
        ..pfsync::payouts::log::LogEvent::new(
            "p-old",
            pfsync::operation::OpKind::Payout,
            pfsync::payouts::state::Event::Intent,
            1,
            "pfsync:default:payout:p-old",
            "earlier",
            at,
        )
    };
    use pfsync::tables::row::Row;
    let full = pfsync::payouts::log::LogEvent::to_batch(&[e]).unwrap();
    let batch = full.project(&(0..n).collect::<Vec<_>>()).unwrap();
    t.write(vec![batch]).await.unwrap();
}

#[tokio::test]
async fn an_earlier_payout_log_gains_the_new_columns_once_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    old_log(&wh, None).await;
    let commit = CommitInfo { run_id: "upgrade-test".into(), step: "test" };
    let t = open_or_create(&wh, &PAYOUT_LOG, &commit).await.expect("an earlier log is brought up to the spec");
    let names: Vec<String> = t.snapshot().unwrap().schema().fields().map(|f| f.name().clone()).collect();
    assert_eq!(names.len(), PAYOUT_LOG.columns.len(), "{names:?}");
    let added = ["payer_agent_id", "decided_by", "note", "escrow_tag"].map(String::from);
    assert!(names.ends_with(&added), "{names:?}");
    let version = t.version();
    // Opened again (by a reader too): nothing more to add, no further commit.
    let again = open_existing(&wh, &PAYOUT_LOG).await.unwrap().unwrap();
    assert_eq!(again.version(), version);
    let ctx = sql_context(&wh).await.unwrap();
    let sql = "SELECT count(*) FROM purpleflea.payouts.status WHERE operation_id = 'p-old' AND status = 'in_flight'";
    assert_eq!(count(&ctx, sql).await, 1, "the earlier row reads through the status view");
    let sql = "SELECT count(*) FROM purpleflea.payouts.log WHERE payer_agent_id IS NULL AND amount_usd = 1.50";
    assert_eq!(count(&ctx, sql).await, 1, "its new columns read as null, its values unchanged");
}

#[tokio::test]
async fn a_log_changed_otherwise_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let stray = deltalake::kernel::StructField::new("stray", deltalake::kernel::DataType::STRING, true);
    old_log(&wh, Some(stray)).await;
    let commit = CommitInfo { run_id: "upgrade-test".into(), step: "test" };
    let e = open_or_create(&wh, &PAYOUT_LOG, &commit).await.unwrap_err().to_string();
    assert!(e.contains("stray") || e.contains("payer_agent_id"), "{e}");
}
