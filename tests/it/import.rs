//! `pfsync import` through the binary: a file that cannot be imported exits 2 with its line and column and
//! writes nothing; the same file again adds nothing; a changed row under a known id is refused whole.

use std::path::Path;

use crate::common::{PfsyncCommand, pfsync, text};

fn pending_ids(warehouse: &Path) -> String {
    let o = pfsync()
        .warehouse(warehouse)
        .args(["sql", "--output", "json", "SELECT payout_id FROM purpleflea.payouts.pending ORDER BY payout_id"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_bad_file_exits_2_naming_the_cell_and_a_changed_row_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("warehouse");
    let import = |name: &str, csv: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, csv).unwrap();
        pfsync().warehouse(&wh).args(["-q", "import", "payouts"]).arg(&file).output().unwrap()
    };
    let o = pfsync().warehouse(&wh).args(["-q", "init"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let head = "payout_id,agent_id,amount_usd,reason\n";
    let o = import("bad.csv", &format!("{head}p-1,agent-000001,1.00,ok\np-2,agent-000002,1.005,three decimals\n"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bad.csv: line 3, column amount_usd"), "{}", text(&o));
    assert_eq!(pending_ids(&wh), "[]", "nothing written, not even the good line");

    let good = format!("{head}p-1,agent-000001,1.00,ok\np-2,agent-000002,2.50,ok\n");
    let o = import("good.csv", &good);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("imported 2 row(s)"), "{}", text(&o));
    let o = import("good.csv", &good);
    assert!(text(&o).contains("imported 0 row(s)") && text(&o).contains("2 already there"), "{}", text(&o));

    let o = import("good.csv", &format!("{head}p-3,agent-000003,3.00,new\np-2,agent-000002,25.00,changed\n"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("p-2 (line 3)") && text(&o).contains("nothing was imported"), "{}", text(&o));
    assert_eq!(pending_ids(&wh), r#"[{"payout_id":"p-1"},{"payout_id":"p-2"}]"#);
}
