//! Exit codes and messages a user meets: a mistake of theirs exits 2 and says what it was; a message says
//! what happened and nothing that did not.

use crate::common::{PfsyncCommand, output_in_place, pfsync, sandbox, text, warehouse};

/// A typo in a query, or a table that does not exist, is the user's to fix (exit 2, with the cause), not a
/// storage failure to retry (exit 4).
#[test]
fn a_sql_typo_or_a_missing_table_exits_2_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    for (query, cause) in [
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM purpleflea.payouts.nope", "nope"),
        ("SELECT no_such_column FROM purpleflea.payouts.log", "no_such_column"),
    ] {
        let out = pfsync().warehouse(dir.path()).args(["sql", query]).output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{query}: {t}");
        assert!(t.contains("the query cannot run") && t.contains(cause), "{query}: {t}");
    }
}

/// A `--register` path that holds no table is the user's mistake: exit 2, naming the flag and the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_path_with_no_table_exits_2_naming_it() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    let missing = dir.path().join("no-such-table");
    let mut c = pfsync();
    c.sandbox(&sb)
        .warehouse(dir.path())
        .args(["payouts", "--register"])
        .arg(format!("ext_rows={}", missing.display()))
        .args(["--payouts-sql", "SELECT * FROM ext_rows"]);
    let out = output_in_place(&mut c);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("--register ext_rows") && t.contains("no Delta table"), "{t}");
}

/// Exit 5 for a source whose every row is refused: the message does not claim other rows were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_5_says_only_what_happened_to_the_rows() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let _wh = warehouse(&dir);
    crate::common::init(dir.path());
    let sql = "SELECT * FROM (VALUES ('bad-1', 'agent-000001', '-1.00', 'task')) AS t(payout_id, agent_id, amount_usd, reason)";
    let mut c = pfsync();
    c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--payouts-sql", sql]);
    let out = output_in_place(&mut c);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(5), "{t}");
    assert!(!t.contains("the other rows were written"), "{t}");
    assert!(t.contains("1 row(s) were newly refused or failed"), "{t}");
}

/// `pfsync status` with nothing open says so, instead of an empty table's borders.
#[test]
fn status_with_nothing_open_says_none() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    let out = pfsync().warehouse(dir.path()).arg("status").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("not final:\n(none: every operation in the log is final)"), "{t}");
    assert!(!t.contains("not final:\n++"), "{t}");
}

/// A malformed agent key names the variable it was read from, not `PURPLEFLEA_API_KEY`.
#[test]
fn a_malformed_agent_key_names_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path().join("wh"));
    let config = dir.path().join("pfsync.toml");
    std::fs::write(
        &config,
        "[provider]\nkind = \"live\"\ncasino_url = \"http://127.0.0.1:9/api/v1\"\nescrow_url = \"http://127.0.0.1:9\"\n\
         [[provider.agent_keys]]\nenv = \"PFSYNC_AGENT_KEY_WORKER1\"\n",
    )
    .unwrap();
    let out = pfsync()
        .warehouse(dir.path().join("wh"))
        .arg("--config")
        .arg(&config)
        .args(["sync", "wallets"])
        .env("PURPLEFLEA_API_KEY", "sk_live_payer")
        .env("PFSYNC_AGENT_KEY_WORKER1", "two words")
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("in PFSYNC_AGENT_KEY_WORKER1") && !t.contains("PURPLEFLEA_API_KEY"), "{t}");
    assert!(!t.contains("two words"), "the key's text is never shown: {t}");
}

/// A sandbox whose port is taken says which address, and how to pick another.
#[test]
fn a_busy_sandbox_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = pfsync().args(["sandbox", "--port", &port, "--agents", "1"]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("127.0.0.1:{port}")) && t.contains("--port 0"), "{t}");
}

/// A config file that does not parse: TOML's pointer at the column is shown as lines, not as `\n`.
#[test]
fn a_toml_error_reads_as_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pfsync.toml");
    std::fs::write(&config, "[provider\n").unwrap();
    let out = pfsync().arg("--config").arg(&config).arg("status").output().unwrap();
    let t = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(!t.contains(r"\n"), "{t}");
    assert!(t.lines().any(|l| l.trim_start().starts_with("1 | [provider")), "{t}");
    assert!(t.lines().skip(1).all(|l| l.is_empty() || l.starts_with("  ")), "lines under the first are indented: {t}");
}

/// A dry run writes no table: no `purpleflea.ops.runs` row that would read as a run that happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_leaves_no_run_row() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    let sql = "SELECT * FROM (VALUES ('dry-1', 'agent-000001', '1.00', 'task')) AS t(payout_id, agent_id, amount_usd, reason)";
    let runs = |dir: &std::path::Path| {
        let out =
            pfsync().warehouse(dir).args(["sql", "SELECT count(*) AS n FROM purpleflea.ops.runs"]).output().unwrap();
        text(&out)
    };
    let before = runs(dir.path());
    let mut c = pfsync();
    c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--dry-run", "--payouts-sql", sql]);
    let out = output_in_place(&mut c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(runs(dir.path()), before, "a dry run added a run row");
    let mut c = pfsync();
    c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--payouts-sql", sql]);
    let out = output_in_place(&mut c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(runs(dir.path()), before, "a real run adds its row");
}

/// A table that cannot be written says why, not only which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_names_its_cause() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    // The rejects table's next commit file is taken by a directory: the commit cannot be written (running
    // as root, a read-only folder would not stop the write).
    let log = dir.path().join("purpleflea/payouts/rejects/_delta_log");
    let next = std::fs::read_dir(&log)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count();
    std::fs::create_dir(log.join(format!("{next:020}.json"))).unwrap();
    let sql = "SELECT * FROM (VALUES ('bad-1', 'agent-000001', '-1.00', 'task')) AS t(payout_id, agent_id, amount_usd, reason)";
    let mut c = pfsync();
    c.sandbox(&sb).warehouse(dir.path()).args(["payouts", "--payouts-sql", sql]);
    let out = output_in_place(&mut c);
    let t = text(&out);
    let last = t.lines().rfind(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{t}"));
    assert!(
        last.contains("purpleflea.payouts.rejects")
            && last.len() > "error: writing purpleflea.payouts.rejects failed".len() + 5,
        "{t}"
    );
}
