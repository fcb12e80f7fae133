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
