//! A CLI that fits where it runs: shell completions and man pages generated from the flags, JSON for
//! programs from `status`, `tables` and `sql`, global options under their own heading, source queries from
//! files, and `pfsync doctor`. Each through the binary, as a user or a script runs it.

use std::process::{Command, Output};

use clap::CommandFactory;
use pfsync::cli::Cli;
use serde_json::Value;

use crate::common::{PfsyncCommand, output_in_place, pfsync, sandbox, text};
use crate::payouts::write_pending;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every command a user can type (not clap's own `help`).
fn commands() -> Vec<String> {
    Cli::command().get_subcommands().map(|c| c.get_name().to_string()).filter(|n| n != "help").collect()
}

#[test]
fn completions_for_bash_zsh_and_fish_are_generated_from_the_flags() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let o = pfsync().args(["completions", shell]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o));
        let script = stdout(&o);
        // fish names long flags without their dashes (`-l payouts-sql-file`).
        for word in ["payouts", "doctor", "payouts-sql-file", "warehouse"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    // bash itself completes a command and a flag from the script.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pfsync.bash");
    std::fs::write(&script, pfsync().args(["completions", "bash"]).output().unwrap().stdout).unwrap();
    let complete = |words: &str, cword: usize| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _pfsync pfsync \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let o = Command::new("bash").args(["-c", &program]).output().expect("bash");
        assert!(o.status.success(), "{}", text(&o));
        stdout(&o)
    };
    assert!(complete("pfsync doc", 1).split_whitespace().any(|w| w == "doctor"));
    let flags = complete("pfsync payouts --actions-sql", 2);
    assert!(flags.split_whitespace().any(|w| w == "--actions-sql-file"), "{flags}");
}

#[test]
fn the_man_pages_document_every_command_and_the_global_options() {
    let o = pfsync().arg("man").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let page = stdout(&o);
    assert!(page.contains(".TH pfsync 1"), "{}", &page[..200.min(page.len())]);
    assert!(page.contains(".SH \"GLOBAL OPTIONS\""), "the global options have their section");
    assert!(page.contains(&format!("pfsync {}", env!("CARGO_PKG_VERSION"))));
    let dir = tempfile::tempdir().unwrap();
    let o = pfsync().args(["man", "--dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for command in commands() {
        let path = dir.path().join(format!("pfsync-{command}.1"));
        let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(page.contains(&format!(".TH pfsync-{command} 1")), "{command}");
        assert!(page.contains("\\-\\-warehouse"), "{command}'s page lists the global options");
    }
    assert!(dir.path().join("pfsync.1").is_file());
}

#[test]
fn every_help_shows_the_global_options_under_their_own_heading() {
    let mut helps = vec![(String::from("pfsync"), pfsync().arg("--help").output().unwrap())];
    for c in commands() {
        helps.push((c.clone(), pfsync().args([c.as_str(), "--help"]).output().unwrap()));
    }
    for (command, o) in helps {
        let help = stdout(&o);
        let (own, global) = help.split_once("\nGlobal options:\n").unwrap_or_else(|| panic!("{command}:\n{help}"));
        assert!(!own.contains("--warehouse <"), "{command}: --warehouse is under Global options only");
        for flag in ["--warehouse", "--config", "--run-id", "--log-format"] {
            assert!(global.contains(flag), "{command}: {flag} under Global options");
        }
        let (_, http) = global.split_once("Global HTTP client options:").unwrap_or_else(|| panic!("{command}"));
        assert!(http.contains("--timeout-secs") && http.contains("--max-attempts"), "{command}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_tables_and_sql_print_json_for_programs() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let run = |args: &[&str]| {
        let mut c = pfsync();
        c.warehouse(dir.path()).sandbox(&sb).arg("-q").args(args);
        output_in_place(&mut c)
    };
    assert_eq!(run(&["init"]).status.code(), Some(0));
    write_pending(&wh, &[("j-1", "agent-000001", "1.25", "r"), ("j-2", "agent-000002", "20.10", "r")]).await;
    let o = run(&["payouts"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = run(&["status", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let status: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(status["payout_log"], true);
    let summary = status["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!((summary[0]["kind"].as_str(), summary[0]["status"].as_str()), (Some("payout"), Some("completed")));
    assert_eq!(summary[0]["operations"], 2);
    assert!(stdout(&o).contains("\"amount_usd\":21.35"), "exact money: {}", stdout(&o));
    assert_eq!(status["not_final"], Value::Array(vec![]));

    let o = run(&["tables", "--output", "json"]);
    let tables: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let tables = tables.as_array().unwrap();
    assert_eq!(tables.len(), pfsync::tables::ALL.len());
    let log = tables.iter().find(|t| t["table"] == "purpleflea.payouts.log").unwrap();
    assert_eq!((log["created"].as_bool(), log["rows"].as_i64()), (Some(true), Some(4)), "{log}");
    assert!(log["location"].as_str().unwrap().ends_with("purpleflea/payouts/log/"));

    // --format is the same flag (sql had it first).
    for flag in ["--output", "--format"] {
        let o = run(&[
            "sql",
            flag,
            "json",
            "SELECT payout_id, amount_usd, requested_at FROM purpleflea.payouts.pending ORDER BY payout_id",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(
            stdout(&o).trim(),
            r#"[{"payout_id":"j-1","amount_usd":1.25,"requested_at":null},{"payout_id":"j-2","amount_usd":20.10,"requested_at":null}]"#
        );
    }
    let o = run(&["sql", "--output", "json", "SELECT * FROM purpleflea.payouts.pending WHERE false"]);
    assert_eq!(stdout(&o).trim(), "[]");
    // A query may start with a comment, without `--` before it.
    let o = run(&["sql", "-- how many\nSELECT count(*) AS n FROM purpleflea.payouts.pending", "--output", "json"]);
    assert_eq!(stdout(&o).trim(), r#"[{"n":2}]"#, "{}", text(&o));
    // Read-only whatever the output: an INSERT is refused with json and with arrow alike.
    for output in ["json", "arrow"] {
        let o = run(&[
            "sql",
            "--output",
            output,
            "INSERT INTO purpleflea.payouts.pending SELECT * FROM purpleflea.payouts.pending",
        ]);
        assert_eq!(o.status.code(), Some(2), "{output}: {}", text(&o));
    }
    assert_eq!(
        run(&["sql", "--output", "json", "SELECT count(*) AS n FROM purpleflea.payouts.pending"]).stdout,
        b"[{\"n\":2}]\n"
    );
}

#[test]
fn a_source_query_file_must_exist_hold_a_statement_and_not_come_with_the_inline_flag() {
    let dir = tempfile::tempdir().unwrap();
    let comments = dir.path().join("comments.sql");
    std::fs::write(&comments, "-- nothing but a comment\n\n").unwrap();
    let query = dir.path().join("q.sql");
    std::fs::write(&query, "-- a payout per row\nSELECT 1").unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--payouts-sql-file", "/no/such/file.sql"], "cannot read it"),
        (vec!["--actions-sql-file", comments.to_str().unwrap()], "holds no SQL statement"),
        (vec!["--payouts-sql", "SELECT 1", "--payouts-sql-file", query.to_str().unwrap()], "cannot be used with"),
    ];
    for (args, says) in cases {
        let o = pfsync().warehouse(dir.path()).arg("payouts").args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(args[0]), "the message names the flag: {}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_config_key_provider_clock_and_tables_without_moving_money() {
    let sb = sandbox(5).await;
    let dir = tempfile::tempdir().unwrap();
    let doctor = |key: &str, extra: &[(&str, &str)], args: &[&str]| {
        let mut c = pfsync();
        c.warehouse(dir.path()).provider(sb.base_url().as_str(), key).args(["--max-attempts", "1"]);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.arg("doctor").args(args);
        output_in_place(&mut c)
    };
    let key = pfsync::sandbox::DEFAULT_SANDBOX_KEY;
    // A folder with none of pfsync's tables: the one failure, and what to do.
    let o = doctor(key, &[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let lines = stdout(&o);
    for line in ["ok    config", "ok    key", "ok    provider", "ok    clock", "fail  tables"] {
        assert!(lines.contains(line), "{line}: {lines}");
    }
    assert!(lines.contains("run `pfsync init`"), "{lines}");
    let mut c = pfsync();
    assert_eq!(output_in_place(c.warehouse(dir.path()).arg("init")).status.code(), Some(0));
    let o = doctor(key, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).ends_with("doctor: every check passed\n"), "{}", stdout(&o));

    // A key the provider refuses: exit 3, the provider check says so; the clock is still read (a 401 has a Date).
    let o = doctor("pf_wrong_key", &[], &["--output", "json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((v["ok"].as_bool(), v["exit_code"].as_u64()), (Some(false), Some(3)));
    let status = |name: &str| v["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(status("provider")["status"], "fail");
    assert!(status("provider")["detail"].as_str().unwrap().contains("refused the key"));
    assert_eq!(status("clock")["status"], "ok");
    assert!(!stdout(&o).contains("pf_wrong_key") && !text(&o).contains("pf_wrong_key"), "the key is never printed");

    // This machine ten minutes ahead of the provider (a test build's clock offset): the clock check fails.
    let o = doctor(key, &[(pfsync::clock::TEST_OFFSET_ENV, "600")], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The Date header has whole seconds: within a second of the offset.
    let line = stdout(&o).lines().find(|l| l.starts_with("fail  clock")).map(str::to_string);
    let secs: Option<i64> =
        line.as_deref().and_then(|l| l.split("clock is ").nth(1)?.split(" s ahead of").next()?.parse().ok());
    assert!(secs.is_some_and(|s| (599..=601).contains(&s)), "{}", stdout(&o));
    let o = doctor(key, &[(pfsync::clock::TEST_OFFSET_ENV, "30")], &["--max-clock-skew-secs", "60"]);
    assert_eq!(o.status.code(), Some(0), "a warning only: {}", text(&o));
    assert!(stdout(&o).contains("warn  clock"), "{}", stdout(&o));

    // No key at all: exit 2, and the provider is not asked.
    let mut c = pfsync();
    let o = output_in_place(c.warehouse(dir.path()).args(["--api-url", sb.base_url().as_str(), "doctor"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stdout(&o).contains("fail  key") && stdout(&o).contains("skip  provider"), "{}", stdout(&o));

    // Nothing was sent that moves money.
    assert_eq!(sb.stats().executed, 0, "doctor only reads");
}
