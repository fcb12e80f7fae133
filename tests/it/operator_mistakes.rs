//! What pfsync refuses when its operator gets something wrong, and how it protects itself on the host: config
//! typos, table locations that are not pfsync's, logs that cannot be forged, no core dumps, and a sandbox
//! that will not serve its well-known key to a network.

use std::path::Path;
use std::time::Duration;

use crate::common::{PfsyncCommand, output_within, pfsync, pfsync_at, text};

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
    let out = pfsync().config(&cfg).warehouse(&wh).arg("init").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("purpleflea.agents.walets") && t.contains("did you mean \"purpleflea.agents.wallets\""), "{t}");
    assert!(!wh.exists() && !mapped.exists(), "nothing was created: {t}");
}

/// A mistyped `--warehouse` used to be a silent no-op: `pfsync payouts` created three tables there, reported
/// 0 rows and exited 0, every hour. Every command that reads or writes tables now refuses a warehouse with
/// none of pfsync's (exit 2, naming the location and `pfsync init`) and creates nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_with_no_pfsync_table_is_refused_by_every_command_but_init() {
    let sb = crate::common::sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("pfsync-warehose");
    let commands: [&[&str]; 10] = [
        &["payouts"],
        &["payouts", "--dry-run"],
        &["run"],
        &["sync"],
        &["rules"],
        &["reconcile"],
        &["status"],
        &["tables"],
        &["sql", "SELECT 1"],
        &["maintain"],
    ];
    for args in commands {
        let out = crate::common::output_in_place(pfsync().sandbox(&sb).warehouse(&typo).args(args));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains("no pfsync table at") && t.contains("pfsync init"), "{args:?}: {t}");
        assert!(t.contains(&typo.display().to_string()), "{args:?} names the resolved location: {t}");
        assert!(!typo.exists(), "{args:?} created nothing: {t}");
    }
    // `init` is how a warehouse starts; after it, a run goes through.
    let out = crate::common::output_in_place(pfsync().warehouse(&typo).arg("init"));
    assert!(out.status.success(), "{}", text(&out));
    let out = crate::common::output_in_place(pfsync().sandbox(&sb).warehouse(&typo).arg("payouts"));
    assert!(out.status.success(), "{}", text(&out));
}

/// In an initialised warehouse, a default source table that is not where pfsync looks (here: removed) is
/// an empty source, but said, with the location it looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_default_source_table_is_a_warning_naming_where_pfsync_looked() {
    let sb = crate::common::sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    let pending = dir.path().join("purpleflea/payouts/pending");
    std::fs::remove_dir_all(&pending).unwrap();
    let out = crate::common::output_in_place(pfsync().sandbox(&sb).warehouse(dir.path()).arg("payouts"));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let warning = t.lines().find(|l| l.contains("WARN") && l.contains("purpleflea.payouts.pending"));
    let warning = warning.unwrap_or_else(|| panic!("a warning names the table: {t}"));
    assert!(warning.contains(&pending.display().to_string()), "and where it looked: {warning}");
    assert!(warning.contains("does not exist"), "{warning}");
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
    let out = pfsync().config(&cfg).warehouse(&wh).arg("init").output().unwrap();
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
        let out = pfsync().config(&cfg).warehouse(&wh).arg("init").output().unwrap();
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
        let mut c = pfsync_at(bin);
        c.uid(65534).gid(65534);
        c
    } else {
        std::fs::set_permissions(&wallets, std::fs::Permissions::from_mode(0o555)).unwrap();
        pfsync()
    };
    let out = cmd.warehouse(&wh).arg("init").current_dir(dir.path()).output().unwrap();
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
    let out = pfsync().config(&cfg).warehouse(dir.path().join("wh")).arg("init").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("[tables.\"purpleflea.payouts.log\"].location") && t.contains("memory"), "{t}");
}

/// Tables cannot live in a Unity Catalog volume or in DBFS: a Delta commit through their FUSE mount fails
/// ("Function not implemented (os error 38)": delta-rs commits with a hard link or rename-if-not-exists,
/// delta-rs issue 2540). A `/Volumes/` or `/dbfs/` warehouse or table location is refused before anything
/// runs, and the message says why and what to use instead.
#[test]
fn a_volumes_warehouse_exits_2_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = pfsync().args(["--warehouse", "/Volumes/purpleflea/ops/warehouse", "init"]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("--warehouse") && t.contains("\"/Volumes/purpleflea/ops/warehouse/\""), "{t}");
    assert!(t.contains("Unity Catalog volume") && t.contains("os error 38"), "says why: {t}");
    assert!(t.contains("external location") && t.contains("abfss://") && t.contains("s3://"), "and what to use: {t}");

    // A table mapped into DBFS, and a dbfs: URI, the same.
    let cfg = dir.path().join("pfsync.toml");
    for location in ["/dbfs/mnt/pfsync/log", "dbfs:/mnt/pfsync/log"] {
        write(&cfg, &format!("[tables.\"purpleflea.payouts.log\"]\nlocation = \"{location}\"\n"));
        let out = pfsync().config(&cfg).warehouse(dir.path().join("wh")).arg("tables").output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("[tables.\"purpleflea.payouts.log\"].location") && t.contains("DBFS"), "{t}");
        assert!(t.contains("external location"), "{t}");
        assert!(!dir.path().join("wh").exists(), "nothing touched: {t}");
    }
}

/// Answers every request with `body` (a list page), like a provider would, from a thread.
fn serve_page(body: String) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes()));
        }
    });
    addr
}

/// A provider controls field names and row ids. Written raw, a newline in one starts a log line of the
/// provider's choosing and an ESC sequence rewrites the operator's terminal; every logged value is escaped,
/// and a log that is not a terminal gets no colour codes at all.
#[test]
fn values_from_the_api_cannot_forge_log_lines_or_send_terminal_codes() {
    let good = serde_json::json!({
        "agent_id": "agent-1", "wallet_address": null, "balance_usd": 1.5, "active_escrow_count": 0,
        "total_earned_usd": 2, "referral_code": null, "registered_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "x\nFORGED-FIELD ERROR all payouts failed \u{1b}[31m": 1,
    });
    let bad = serde_json::json!({"agent_id": "id\nFORGED-ID WARN \u{1b}[2Jcleared", "balance_usd": "not money"});
    let addr = serve_page(serde_json::json!({"data": [good, bad], "next_cursor": null}).to_string());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/api");
    crate::common::init(dir.path().join("wh"));
    let out = pfsync()
        .provider(&url, "pf_test_x")
        .args(["--max-attempts", "1", "sync", "wallets"])
        .warehouse(dir.path().join("wh"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "the bad row failed alone: {}", text(&out));
    assert!(stderr.contains(r"x\nFORGED-FIELD"), "the field name is logged, escaped: {stderr}");
    assert!(stderr.contains(r"id\nFORGED-ID"), "the row id is logged, escaped: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no ESC reaches the log, from the API or as colour: {stderr:?}");
    for line in stderr.lines() {
        assert!(!line.trim_start().starts_with("FORGED"), "a line the API wrote: {line:?}\n{stderr}");
    }
}

#[test]
fn no_core_dump_can_hold_the_key() {
    use std::io::{BufRead, BufReader};
    let mut child = pfsync()
        .args(["sandbox", "--port", "0", "--agents", "1"])
        .env("PURPLEFLEA_API_KEY", "pf_test_DO_NOT_DUMP")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("ready"), "{line}");
    let limits = limits.unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap_or_else(|| panic!("{limits}"));
    let values: Vec<&str> = core.trim_start_matches("Max core file size").split_whitespace().collect();
    assert_eq!(&values[..2], ["0", "0"], "soft and hard core limits are 0: {core}");
}

#[test]
fn the_sandbox_will_not_serve_its_well_known_key_or_admin_controls_to_a_network() {
    let refused: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["--host", "0.0.0.0"], None),
        (vec!["--host", "0.0.0.0", "--admin"], None),
        (vec!["--host", "::"], None),
        (vec!["--host", "0.0.0.0"], Some("pf_test_sandbox")),
    ];
    for (flags, key) in refused {
        let mut cmd = pfsync();
        cmd.args(["sandbox", "--port", "0", "--agents", "1"]).args(&flags);
        if let Some(k) = key {
            cmd.env("PURPLEFLEA_API_KEY", k);
        }
        let out = output_within(&mut cmd, Duration::from_secs(20))
            .unwrap_or_else(|o| panic!("{flags:?} {key:?}: the sandbox started serving: {}", text(&o)));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?} {key:?}: {t}");
        assert!(t.contains("--host") && t.contains("PURPLEFLEA_API_KEY"), "{t}");
    }
    // With a key of its own it may listen on every interface; on loopback it needs none.
    let mut cmd = pfsync();
    cmd.args(["sandbox", "--port", "0", "--agents", "1", "--host", "0.0.0.0", "--admin"])
        .env("PURPLEFLEA_API_KEY", "pf_test_a_key_of_our_own");
    assert!(output_within(&mut cmd, Duration::from_secs(3)).is_err(), "serves");
    let mut cmd = pfsync();
    cmd.args(["sandbox", "--port", "0", "--agents", "1", "--host", "127.0.0.1", "--admin"]);
    assert!(output_within(&mut cmd, Duration::from_secs(3)).is_err(), "serves");
}

/// A `pfsync sandbox` on a free port with the given extra flags, and its address.
fn sandbox_process(flags: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = pfsync()
        .args(["sandbox", "--port", "0", "--agents", "1"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:")).unwrap_or_else(|| panic!("{line}"));
    let addr = url.trim_start_matches("http://").trim_end_matches("/api").to_string();
    (child, addr)
}

/// Seconds until the server closes `stream`, feeding it `drip` every 200 ms; `None` if still open after
/// `limit` seconds.
fn seconds_until_closed(stream: &mut std::net::TcpStream, drip: Option<&[u8]>, limit: f64) -> Option<f64> {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    stream.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed().as_secs_f64() < limit {
        if let Some(d) = drip
            && stream.write_all(d).is_err()
        {
            return Some(started.elapsed().as_secs_f64());
        }
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed().as_secs_f64()),
            Ok(_) => {} // a response (an error status) before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed().as_secs_f64()),
        }
    }
    None
}

#[test]
fn the_sandbox_closes_connections_that_send_headers_slowly_or_stall() {
    use std::io::Write;
    let (mut child, addr) = sandbox_process(&["--header-timeout-secs", "1", "--idle-timeout-secs", "2"]);

    // Headers that never end, one line every 200 ms: closed by the header timeout.
    let mut slow_headers = std::net::TcpStream::connect(&addr).unwrap();
    slow_headers.write_all(b"GET /api/wallets HTTP/1.1\r\nhost: sandbox\r\n").unwrap();
    let headers_closed = seconds_until_closed(&mut slow_headers, Some(b"x-slow: y\r\n"), 8.0);

    // Headers complete, then a body that stops after 10 of its 100 bytes: closed by the idle timeout.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(
            b"POST /api/wallet/payout HTTP/1.1\r\nhost: sandbox\r\nauthorization: Bearer pf_test_sandbox\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"agent_id\"",
        )
        .unwrap();
    let stall_closed = seconds_until_closed(&mut stalled, None, 8.0);
    let _ = child.kill();
    let _ = child.wait();

    let headers_closed = headers_closed.expect("a connection trickling headers is closed");
    assert!(headers_closed < 4.0, "closed after {headers_closed:.1} s, the header timeout is 1 s");
    let stall_closed = stall_closed.expect("a connection that stalls mid-body is closed");
    assert!((1.5..5.0).contains(&stall_closed), "closed after {stall_closed:.1} s, the idle timeout is 2 s");
}

/// `pfsync sql` reads; it never writes. An INSERT into the append-only payout log appended a forged
/// `completed 999.99` the status view showed, and one into a pending table rounded 1.005 to 1.00 without a
/// word. Every statement that would write or change a table or the session is refused (exit 2) with where
/// to write instead, and no table moves; so is a source query of `pfsync payouts` that writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pfsync_sql_refuses_every_write_and_no_table_moves() {
    use pfsync::payouts::{PayoutOptions, run_payouts};
    use pfsync::tables::{CommitInfo, PAYOUT_LOG, PENDING_PAYOUTS, open_existing};

    let sb = crate::common::sandbox(3).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    crate::payouts::write_pending(&wh, &[("p-1", "agent-000001", "1.25", "bounty")]).await;
    let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "payouts" };
    let provider = pfsync::provider::seed::SeedProvider::new(crate::common::client(&sb), true);
    let r = run_payouts(&provider, &wh, &commit, &PayoutOptions::default(), &pfsync::progress::Progress::hidden())
        .await
        .unwrap();
    assert_eq!(r.completed, 1, "{r}");
    let versions = || async {
        let mut out = Vec::new();
        for spec in [&PAYOUT_LOG, &PENDING_PAYOUTS] {
            out.push(open_existing(&wh, spec).await.unwrap().unwrap().version());
        }
        out
    };
    let before = versions().await;
    let sql = |query: &str| {
        let out = tokio::task::block_in_place(|| {
            pfsync().arg("--warehouse").arg(dir.path()).args(["sql", query]).output().unwrap()
        });
        (out.status.code(), text(&out))
    };

    let forged = "INSERT INTO purpleflea.payouts.log SELECT 'forged' AS operation_id, kind, event, attempt, agent_id, \
                  counterparty_agent_id, CAST(999.99 AS DECIMAL(18,2)) AS amount_usd, reason, 'pfsync:default:payout:forged', \
                  tx_id, escrow_id, http_status, error_code, error_message, run_id, recorded_at, recorded_date \
                  FROM purpleflea.payouts.log WHERE event = 'completed'";
    let (code, t) = sql(forged);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("read-only") && t.contains("pfsync resolve"), "says where the log is written: {t}");
    let (code, t) =
        sql("INSERT INTO purpleflea.payouts.pending VALUES ('p-2', 'agent-000002', 1.005, 'x', NULL, 'me')");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("read-only") && t.contains("upstream job"), "says who writes a source table: {t}");
    for query in [
        "UPDATE purpleflea.payouts.pending SET amount_usd = 2 WHERE payout_id = 'p-1'",
        "DELETE FROM purpleflea.payouts.log",
        "TRUNCATE TABLE purpleflea.payouts.log",
        "MERGE INTO purpleflea.payouts.pending t USING purpleflea.payouts.pending s ON t.payout_id = s.payout_id \
         WHEN MATCHED THEN DELETE",
        "CREATE TABLE purpleflea.payouts.copy AS SELECT * FROM purpleflea.payouts.log",
        "CREATE VIEW purpleflea.payouts.v AS SELECT 1",
        "DROP TABLE purpleflea.payouts.log",
        "ALTER TABLE purpleflea.payouts.log RENAME TO x",
        "COPY (SELECT * FROM purpleflea.payouts.log) TO '/tmp/pfsync-copied.parquet'",
        "EXPLAIN ANALYZE INSERT INTO purpleflea.payouts.log SELECT * FROM purpleflea.payouts.log",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; INSERT INTO purpleflea.payouts.log SELECT * FROM purpleflea.payouts.log",
    ] {
        let (code, t) = sql(query);
        assert_eq!(code, Some(2), "{query}: {t}");
        assert!(t.contains("read-only"), "{query}: {t}");
    }
    assert!(!std::path::Path::new("/tmp/pfsync-copied.parquet").exists());
    // Reading is what it is for.
    let (code, t) = sql("SELECT operation_id, amount_usd FROM purpleflea.payouts.log WHERE event = 'completed'");
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("p-1") && t.contains("(1 rows)") && !t.contains("forged"), "{t}");

    // A source query of `pfsync payouts` is read-only as well.
    let out = tokio::task::block_in_place(|| {
        crate::payouts::payouts_cmd(&sb, dir.path()).arg("--payouts-sql").arg(forged).output().unwrap()
    });
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("read-only"), "{t}");
    assert_eq!(versions().await, before, "no table moved");
}
