//! `pfsync run --follow`: an always-on job pays what appears in its sources pass after pass, each once,
//! and SIGTERM ends it with exit 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use pfsync::sandbox::Sandbox;

use crate::common::{PaidBy, PfsyncCommand, assert_paid_once, pfsync, sandbox, wait_until, wait_within, warehouse};
use crate::payouts::{as_refs, n_payouts, write_pending};

fn paid(sb: &Sandbox) -> usize {
    sb.ledger()
        .transactions()
        .filter(|t| t.idempotency_key.as_deref().is_some_and(|k| k.contains(":payout:f-")))
        .count()
}

fn wait_for(sb: &Sandbox, n: usize) {
    wait_until(&format!("{n} paid"), Duration::from_secs(60), || paid(sb) >= n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_pays_new_rows_pass_after_pass_and_sigterm_exits_0() {
    let sb = sandbox(30).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(8, "f");
    write_pending(&wh, &as_refs(&rows[..5])).await;
    let mut child = pfsync()
        .sandbox(&sb)
        .client_budget(1, 1)
        .arg("-q")
        .warehouse(dir.path())
        .args(["run", "--steps", "payouts", "--follow", "--interval", "1", "--in-flight-timeout", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::task::block_in_place(|| wait_for(&sb, 5));
    // Rows written while it runs are paid by a later pass.
    write_pending(&wh, &as_refs(&rows[5..])).await;
    tokio::task::block_in_place(|| wait_for(&sb, 8));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::block_in_place(|| wait_within(&mut child, Duration::from_secs(30)))
        .unwrap_or_else(|| panic!("still running after SIGTERM"));
    let err = {
        use std::io::Read;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert_eq!(status.code(), Some(0), "{err}");
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "pass after pass");
}
