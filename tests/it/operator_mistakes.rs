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
