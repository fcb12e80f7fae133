//! `pfsync run --follow`: an always-on job pays what appears in its sources pass after pass, each once,
//! and SIGTERM ends it with exit 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pfsync::sandbox::{Sandbox, SandboxConfig};

use crate::common::warehouse;
use crate::payouts::{as_refs, assert_each_paid_once, n_payouts, write_pending};

fn paid(sb: &Sandbox) -> usize {
    sb.ledger()
        .transactions()
        .filter(|t| t.idempotency_key.as_deref().is_some_and(|k| k.contains(":payout:f-")))
        .count()
}

fn wait_for(sb: &Sandbox, n: usize) {
    let start = Instant::now();
    while paid(sb) < n {
        assert!(start.elapsed() < Duration::from_secs(60), "only {} of {n} paid", paid(sb));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_pays_new_rows_pass_after_pass_and_sigterm_exits_0() {
    let sb = Sandbox::start(SandboxConfig::for_tests(30)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(8, "f");
    write_pending(&wh, &as_refs(&rows[..5])).await;
    let url = sb.base_url().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pfsync"))
        .args(["--api-url", &url, "--faucet-url", &url, "--timeout-secs", "1", "--max-elapsed-secs", "1", "-q"])
        .arg("--warehouse")
        .arg(dir.path())
        .args(["run", "--steps", "payouts", "--follow", "--interval", "1", "--in-flight-timeout", "4"])
        .env("PURPLEFLEA_API_KEY", "pf_test_sandbox")
        .env_remove("PFSYNC_CRASH_AT")
        .env_remove("PFSYNC_PAUSE_AT")
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
    let start = Instant::now();
    let status = tokio::task::block_in_place(|| {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let err = {
        use std::io::Read;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert_eq!(status.code(), Some(0), "{err}");
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_each_paid_once(&sb, &ids);
}
