//! An operator's stop (SIGTERM from a scheduler, Ctrl-C at a terminal) in the middle of a run: the batch in
//! flight finishes and its outcomes are logged, nothing new is sent, the run exits 9, and an immediate
//! rerun goes on (no 15-minute wait). When outcomes are left open (a kill), exit 6 says which operations wait
//! and from when a rerun acts on them, and `pfsync status OPERATION_ID` says why one waits.

use std::process::Stdio;

use crate::common::{
    PaidBy, PfsyncCommand, assert_paid_once, output_in_place, paid_per, pfsync, sandbox, text, warehouse,
};
use crate::payouts::{as_refs, n_payouts, write_pending};

/// A stop during the first batch's sends: that batch is sent to the end and logged; no later batch starts.
async fn a_stop_mid_batch(command: &[&str], signal: &str) {
    let sb = sandbox(60).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::common::init(dir.path());
    let rows = n_payouts(20, "s");
    write_pending(&wh, &as_refs(&rows)).await;
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let cmd = |signal_at: Option<&str>| {
        let mut c = pfsync();
        c.sandbox(&sb).warehouse(dir.path()).args(command).args(["--batch-size", "5"]);
        if let Some(at) = signal_at {
            c.env("PFSYNC_SIGNAL_AT", at);
        }
        c.stdin(Stdio::null());
        c
    };

    let stopped = output_in_place(&mut cmd(Some(&format!("mid_send:1{signal}"))));
    let t = text(&stopped);
    assert_eq!(stopped.status.code(), Some(9), "{t}");
    assert!(t.contains("stop requested") && t.contains("stopped by SIGTERM or Ctrl-C"), "{t}");
    assert!(t.contains("15 operation(s) were not started"), "{t}");
    assert_eq!(paid_per(&sb, PaidBy::Key).len(), 5, "the batch in flight, and nothing after it: {t}");
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let logged =
        crate::common::count(&ctx, "SELECT count(*) FROM purpleflea.payouts.status WHERE status = 'completed'").await;
    assert_eq!(logged, 5, "the batch's outcomes are in the log");

    // A rerun right away goes on: nothing waits for an in-flight timeout.
    let rerun = output_in_place(&mut cmd(None));
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_paid_once(&sb, PaidBy::Key, &ids, "after a stop and a rerun");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_payouts_finishes_the_batch_in_flight_logs_it_sends_nothing_new_and_exits_9() {
    a_stop_mid_batch(&["payouts"], "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_run_finishes_the_batch_in_flight_starts_no_later_step_and_exits_9() {
    a_stop_mid_batch(&["run", "--steps", "payouts,reconcile"], ":int").await;
}

/// A run killed after its intents (no outcome logged): the rerun exits 6 naming the operations that wait and
/// the time from which a rerun acts on them, and `pfsync status ID` shows the events and why it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_6_names_what_waits_and_from_when_and_status_id_says_why() {
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::common::init(dir.path());
    let rows = n_payouts(3, "w");
    write_pending(&wh, &as_refs(&rows)).await;
    let cmd = || {
        let mut c = pfsync();
        c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--in-flight-timeout", "600"]);
        c
    };
    let killed = output_in_place(cmd().env("PFSYNC_CRASH_AT", "after_intents"));
    assert_ne!(killed.status.code(), Some(0), "{}", text(&killed));

    let before = chrono::Utc::now();
    let rerun = output_in_place(&mut cmd());
    let t = text(&rerun);
    assert_eq!(rerun.status.code(), Some(6), "{t}");
    assert!(t.contains("3 in flight (w-1, w-2, w-3)"), "which operations wait: {t}");
    // From the intent plus the in-flight timeout: ten minutes from about now, to the second.
    let from = t.split("a rerun acts on them from ").nth(1).and_then(|s| s.get(..23)).unwrap_or_else(|| panic!("{t}"));
    let from = chrono::NaiveDateTime::parse_from_str(from, "%Y-%m-%d %H:%M:%S UTC").unwrap().and_utc();
    let ahead = from - before;
    assert!(
        ahead <= chrono::Duration::seconds(601) && ahead >= chrono::Duration::seconds(540),
        "acts from {from}, {ahead} after the rerun: {t}"
    );
    assert!(t.contains("pfsync status OPERATION_ID"), "{t}");

    let mut status = pfsync();
    status.warehouse(dir.path()).args(["status", "w-2", "--in-flight-timeout", "600"]);
    let s = output_in_place(&mut status);
    let st = text(&s);
    assert_eq!(s.status.code(), Some(0), "{st}");
    assert!(st.contains("operation w-2 (payout)") && st.contains("intent"), "{st}");
    assert!(st.contains("waits: in flight") && st.contains("a rerun acts on it from"), "{st}");

    // An id the log does not have is the user's mistake, said as such.
    let mut missing = pfsync();
    missing.warehouse(dir.path()).args(["status", "w-9"]);
    let m = output_in_place(&mut missing);
    assert_eq!(m.status.code(), Some(2), "{}", text(&m));
    assert!(text(&m).contains("no operation \"w-9\" in the payout log"), "{}", text(&m));
}
