//! Progress where a driver log can read it: without a terminal, a run prints an info line every
//! `PFSYNC_PROGRESS_SECS` (10 s by default; a fraction of a second here, so the test does not wait) with
//! done/total, rate and unknowns, then the summary.

use crate::common::{PfsyncCommand, output_in_place, pfsync, sandbox, text, warehouse};
use crate::payouts::{as_refs, n_payouts, write_pending};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_payouts_log_done_of_total_rate_and_unknowns_then_the_summary() {
    let sb = sandbox(60).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    crate::common::init(dir.path());
    let rows = n_payouts(120, "g");
    write_pending(&wh, &as_refs(&rows)).await;
    let mut c = pfsync();
    c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--batch-size", "10"]).env("PFSYNC_PROGRESS_SECS", "0.01");
    let out = output_in_place(&mut c);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let lines: Vec<&str> = t.lines().filter(|l| l.contains("progress payouts:")).collect();
    assert!(!lines.is_empty(), "a progress line while the run went on: {t}");
    assert!(
        lines.iter().any(|l| l.contains("/120 operations done") && l.contains("/s, ") && l.contains(" unknown")),
        "done/total, rate and unknowns: {lines:?}"
    );
    assert!(t.contains("payouts ") && t.contains("completed 120"), "the summary: {t}");

    // `-q` is quiet: no progress lines.
    let mut q = pfsync();
    q.sandbox(&sb).warehouse(dir.path()).args(["-q", "payouts"]).env("PFSYNC_PROGRESS_SECS", "0.01");
    let out = output_in_place(&mut q);
    assert!(!text(&out).contains("progress payouts:"), "{}", text(&out));
}
