//! What pfsync refuses when its operator gets something wrong, and how it protects itself on the host: config
//! typos, table locations that are not pfsync's, logs that cannot be forged, no core dumps, and a sandbox
//! that will not serve its well-known key to a network.

use std::path::Path;
use std::process::{Command, Output};

fn pfsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pfsync"));
    c.env_remove("PURPLEFLEA_API_KEY")
        .env_remove("RUST_LOG")
        .env_remove("PFSYNC_CONFIG")
        .env_remove("PFSYNC_WAREHOUSE");
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn a_table_mapping_under_a_name_pfsync_does_not_own_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let cfg = dir.path().join("pfsync.toml");
    let mapped = dir.path().join("wallets-elsewhere");
    write(&cfg, &format!("[tables.\"purpleflea.agents.walets\"]\nlocation = \"{}\"\n", mapped.display()));
    let out = pfsync().arg("--config").arg(&cfg).arg("--warehouse").arg(&wh).arg("init").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("purpleflea.agents.walets") && t.contains("did you mean \"purpleflea.agents.wallets\""), "{t}");
    assert!(!wh.exists() && !mapped.exists(), "nothing was created: {t}");
}

#[test]
fn a_table_is_never_created_in_a_folder_that_already_holds_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let foreign = dir.path().join("etc");
    std::fs::create_dir_all(&foreign).unwrap();
    write(&foreign.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    let cfg = dir.path().join("pfsync.toml");
    write(&cfg, &format!("[tables.\"purpleflea.payouts.log\"]\nlocation = \"{}\"\n", foreign.display()));
    let out = pfsync().arg("--config").arg(&cfg).arg("--warehouse").arg(&wh).arg("init").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("purpleflea.payouts.log") && t.contains("passwd") && t.contains("no Delta table"), "{t}");
    assert!(!foreign.join("_delta_log").exists(), "no log was written next to passwd: {t}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1, "the folder is as it was");

    // A folder of its own, empty or new, is fine; and so is reopening the table pfsync made there.
    let own = dir.path().join("log");
    std::fs::create_dir_all(&own).unwrap();
    write(&cfg, &format!("[tables.\"purpleflea.payouts.log\"]\nlocation = \"{}\"\n", own.display()));
    for _ in 0..2 {
        let out = pfsync().arg("--config").arg(&cfg).arg("--warehouse").arg(&wh).arg("init").output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(own.join("_delta_log").is_dir());
}

/// The folder a table would be created in may not be written: the error says so, instead of the
/// "Table has not yet been initialized" delta-rs gives for a table that is merely absent. As root, which may
/// write anywhere, the binary runs as `nobody` to meet the same refusal an operator's user would.
#[test]
fn a_permission_error_on_a_table_folder_is_shown_as_one() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let wallets = wh.join("purpleflea/agents/wallets");
    std::fs::create_dir_all(&wallets).unwrap();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if as_root {
        // `nobody` cannot reach the target dir under /root: run a link (or copy) of the binary from here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in [&wh, &wh.join("purpleflea"), &wh.join("purpleflea/agents"), &wallets] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bin = dir.path().join("pfsync");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_pfsync"), &bin).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_pfsync"), &bin).unwrap();
        }
        let mut c = Command::new(bin);
        c.env_remove("PURPLEFLEA_API_KEY").env_remove("RUST_LOG").uid(65534).gid(65534);
        c
    } else {
        std::fs::set_permissions(&wallets, std::fs::Permissions::from_mode(0o555)).unwrap();
        pfsync()
    };
    let out = cmd.arg("--warehouse").arg(&wh).arg("init").current_dir(dir.path()).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("purpleflea.agents.wallets") && t.to_lowercase().contains("permission denied"), "{t}");
    assert!(!t.contains("not yet been initialized"), "{t}");
    if !as_root {
        std::fs::set_permissions(&wallets, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// An in-memory table forgets everything when the process exits: a sync into one would report rows
/// written and keep none.
#[test]
fn memory_locations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = pfsync().args(["--warehouse", "memory:///", "init"]).current_dir(dir.path()).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("--warehouse") && t.contains("memory"), "{t}");

    let cfg = dir.path().join("pfsync.toml");
    write(&cfg, "[tables.\"purpleflea.payouts.log\"]\nlocation = \"memory:///log\"\n");
    let out =
        pfsync().arg("--config").arg(&cfg).arg("--warehouse").arg(dir.path().join("wh")).arg("init").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("[tables.\"purpleflea.payouts.log\"].location") && t.contains("memory"), "{t}");
}
