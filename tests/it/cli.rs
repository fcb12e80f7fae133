//! The binary as a user meets it: the demo, help, flag validation and the sandbox command.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::{PaidBy, PfsyncCommand, assert_paid_once, count, output_in_place, pfsync, sandbox, text};

#[test]
fn demo_runs_end_to_end_in_a_fresh_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = pfsync().args(["demo", "--agents", "300"]).current_dir(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("purpleflea.agents.wallets"), "{stdout}");
    assert!(stdout.contains("301 rows"), "{stdout}");
    assert!(stdout.contains("pfsync --warehouse"), "prints a query to try: {stdout}");
    assert!(dir.path().join("pfsync-demo/purpleflea/agents/wallets/_delta_log").is_dir());
    assert!(!dir.path().join("pfsync-warehouse").exists(), "the real commands' default folder is not the demo's");
    // Running it again is fine: still one row per agent.
    let out = pfsync().args(["demo", "--agents", "300"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("301 rows"));
}

/// The issue's data loss, replayed: a demo, then a real payout logged into the same folder, then the demo
/// again. The second demo refuses (exit 2, naming the real run's commit) and the real log is intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_demo_refuses_a_folder_a_real_run_wrote_to_and_leaves_its_log_intact() {
    let sb = sandbox(30).await;
    let dir = tempfile::tempdir().unwrap();
    let demo = || {
        let mut c = pfsync();
        c.args(["demo", "--agents", "30", "--payouts", "5", "--bounties", "2"]).current_dir(dir.path());
        c
    };
    let out = output_in_place(&mut demo());
    assert!(out.status.success(), "{}", text(&out));
    let wh = dir.path().join("pfsync-demo");
    assert!(wh.join("purpleflea/payouts/log/_delta_log").is_dir(), "the demo's own default folder");

    // A user tries their own payout against the demo's folder (as the demo's last lines suggest).
    let out = output_in_place(
        pfsync()
            .sandbox(&sb)
            .warehouse(&wh)
            .args(["payouts", "--payouts-sql"])
            .arg("SELECT 'real-1' AS payout_id, 'agent-000001' AS agent_id, 5.00 AS amount_usd, 'mine' AS reason")
            .args(["--actions-sql", "SELECT * FROM purpleflea.escrow.actions WHERE false"]),
    );
    assert!(out.status.success(), "{}", text(&out));
    let real = "SELECT count(*) FROM purpleflea.payouts.log WHERE operation_id = 'real-1'";
    let logged = |wh: &std::path::Path| {
        let wh = pfsync::tables::Warehouse::local(wh).unwrap();
        async move { count(&pfsync::tables::sql_context(&wh).await.unwrap(), real).await }
    };
    assert_eq!(logged(&wh).await, 2, "intent and outcome of the real payout");

    let out = output_in_place(&mut demo());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a commit the demo did not make") && err.contains("--warehouse"), "{err}");
    assert_eq!(logged(&wh).await, 2, "the real payout log is intact");
    assert_paid_once(&sb, PaidBy::Key, &["real-1"], "the real payout");
}

#[test]
fn help_documents_commands_flags_and_exit_codes() {
    let out = pfsync().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "sync",
        "sandbox",
        "demo",
        "sql",
        "--warehouse",
        "--api-url",
        "--config",
        "--log-format",
        "Exit codes",
        "PURPLEFLEA_API_KEY",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
}

/// `--help` is the exit code documentation a scheduler's author reads: every code of `Exit`, with its
/// meaning, and no other.
#[test]
fn help_lists_every_exit_code_with_its_meaning() {
    use pfsync::exit::Exit;
    for flag in ["--help", "-h"] {
        let out = pfsync().arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let help = String::from_utf8_lossy(&out.stdout);
        // Compared with whitespace collapsed, so a narrow terminal's wrapping does not matter.
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for e in Exit::ALL {
            let line = format!("{} {}", e.code(), e.meaning().split_whitespace().collect::<Vec<_>>().join(" "));
            assert!(flat.contains(&line), "{flag} documents exit {} ({e:?}) as {:?}:\n{help}", e.code(), e.meaning());
        }
        let section = help.split("Exit codes:").nth(1).unwrap_or_else(|| panic!("{flag}: no exit codes:\n{help}"));
        let listed: Vec<u8> = section
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let all: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(listed, all, "{flag} lists exactly the codes of Exit, in order:\n{help}");
    }
}

/// `--shard`, `--register` and `--max-total-usd` are parsed into typed values by clap: a bad value stops
/// the binary with exit 2 and a message naming the flag, before any config, key or table is looked at.
#[test]
fn bad_payout_flag_values_are_refused_by_clap_with_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["payouts", "--shard", "4/4"], "--shard"),
        (vec!["payouts", "--shard", "1/0"], "--shard"),
        (vec!["payouts", "--shard", "two/4"], "--shard"),
        (vec!["payouts", "--shard", "3"], "--shard"),
        (vec!["run", "--shard=-1/4"], "--shard"),
        (vec!["payouts", "--register", "labels"], "--register"),
        (vec!["payouts", "--register", "bad-name=/tmp/labels"], "--register"),
        (vec!["payouts", "--register", "=/tmp/labels"], "--register"),
        (vec!["payouts", "--register", "labels=ftp://host/labels"], "--register"),
        (vec!["run", "--register", "labels="], "--register"),
        (vec!["payouts", "--max-total-usd", "lots"], "--max-total-usd"),
        (vec!["payouts", "--max-total-usd", "10.001"], "--max-total-usd"),
        (vec!["payouts", "--max-total-usd=-5"], "--max-total-usd"),
        (vec!["payouts", "--max-total-usd", "NaN"], "--max-total-usd"),
        (vec!["run", "--max-total-usd", "1e20"], "--max-total-usd"),
    ];
    for (args, flag) in cases {
        // A valid key and warehouse, so only the flag can be what is refused.
        let out = pfsync()
            .args(&args)
            .warehouse(dir.path().join("wh"))
            .env("PURPLEFLEA_API_KEY", "pf_test_sandbox")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value") && err.contains(flag), "{args:?} names {flag}: {err}");
    }
    assert!(!dir.path().join("wh").exists(), "nothing was created");
}

#[test]
fn payout_flags_arrive_in_the_engine_options_as_typed_values() {
    use clap::Parser;
    use pfsync::cli::{Cli, Command};
    let cli = Cli::try_parse_from([
        "pfsync",
        "payouts",
        "--shard",
        "2/4",
        "--register",
        "labels=s3://bucket/labels",
        "--register",
        "extra=/data/extra",
        "--max-total-usd",
        "2500.5",
    ])
    .unwrap();
    let Command::Payouts(args) = cli.command else { panic!("payouts") };
    let opts = pfsync::app::payout_options(&args).unwrap();
    assert_eq!(opts.shard, pfsync::payouts::plan::Shard::new(2, 4));
    assert_eq!(opts.max_total, Some(crate::common::usd("2500.50")));
    let tables: Vec<(&str, &str)> = opts.extra_tables.iter().map(|(n, u)| (n.as_str(), u.as_str())).collect();
    assert_eq!(tables, [("labels", "s3://bucket/labels"), ("extra", "file:///data/extra/")]);
    let none = Cli::try_parse_from(["pfsync", "payouts"]).unwrap();
    let Command::Payouts(args) = none.command else { panic!("payouts") };
    let opts = pfsync::app::payout_options(&args).unwrap();
    assert_eq!((opts.shard, opts.max_total, opts.extra_tables.len()), (None, None, 0));
}

#[test]
fn bad_flags_and_config_stop_with_exit_2_and_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sync", "--page-size", "0"], "--page-size"),
        (vec!["--max-concurrency", "0", "sync"], "--max-concurrency"),
        (vec!["--timeout-secs=-1", "sync"], "--timeout-secs"),
        (vec!["--api-url", "not a url", "sync"], "--api-url"),
        (vec!["--warehouse", "ftp://x/y", "sync"], "--warehouse"),
        (vec!["sync"], "PURPLEFLEA_API_KEY"),
        (vec!["sandbox", "--fault-malformed", "2"], "malformed"),
        (vec!["--run-id", "", "sync"], "--run-id"),
    ];
    for (args, needle) in cases {
        let out = pfsync().args(&args).current_dir(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?} names {needle}: {err}");
    }
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[api]\nmax_atempts = 3\n").unwrap();
    let out = pfsync().config(&cfg).arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_atempts"));
    assert!(!dir.path().join("pfsync-warehouse").exists(), "nothing was created");
}

#[tokio::test]
async fn sync_command_against_a_sandbox_prints_a_summary() {
    let sb = sandbox(40).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path().join("wh"));
    let mut cmd = pfsync();
    cmd.sandbox(&sb)
        .args(["--log-format", "json", "--run-id", "job-77", "sync", "wallets"])
        .warehouse(dir.path().join("wh"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("purpleflea.agents.wallets (full): read 41 rows"), "{stdout}");
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(stderr.contains("job-77"), "json logs carry the run id: {stderr}");
}

#[test]
fn sandbox_command_prints_its_url_and_serves() {
    let mut child = pfsync()
        .args(["sandbox", "--port", "0", "--agents", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:")).unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/wallets"))
            .bearer_auth("pf_test_sandbox")
            .send()
            .await
            .unwrap()
            .status()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_executes_every_step_under_one_run_id_and_records_them() {
    let sb = sandbox(30).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    crate::payouts::write_pending(&wh, &[("r-1", "agent-000001", "1.00", "a"), ("r-2", "agent-000002", "2.00", "b")])
        .await;
    let out = tokio::task::block_in_place(|| {
        pfsync().sandbox(&sb).args(["--run-id", "job-42", "-q", "run"]).warehouse(dir.path()).output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("open findings 0"), "{stdout}");
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let b = ctx
        .sql("SELECT step, exit_code FROM purpleflea.ops.runs WHERE run_id = 'job-42' ORDER BY started_at")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let steps = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let steps: Vec<&str> =
        steps.as_any().downcast_ref::<arrow::array::StringArray>().unwrap().iter().flatten().collect();
    assert_eq!(steps, ["sync", "payouts", "reconcile"]);
}

#[tokio::test]
async fn shards_split_the_payouts_disjointly_and_together_take_all() {
    use pfsync::payouts::{PayoutOptions, run_payouts};
    let sb = sandbox(30).await;
    let c = crate::common::client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let rows: Vec<(String, String)> = (0..40).map(|i| (format!("s-{i}"), format!("agent-{:06}", 1 + i % 30))).collect();
    let refs: Vec<(&str, &str, &str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str(), "1.00", "r")).collect();
    crate::payouts::write_pending(&wh, &refs).await;
    let mut total = 0;
    for i in 0..3 {
        let opts = PayoutOptions { shard: pfsync::payouts::plan::Shard::new(i, 3), ..PayoutOptions::default() };
        let commit = pfsync::tables::CommitInfo { run_id: format!("shard-{i}"), step: "payouts" };
        let r = run_payouts(
            &pfsync::provider::seed::SeedProvider::new(c.clone(), true),
            &wh,
            &commit,
            &opts,
            &pfsync::progress::Progress::hidden(),
        )
        .await
        .unwrap();
        assert!(r.completed > 0 && r.already_final == 0, "shard {i}: {r}");
        total += r.completed;
    }
    assert_eq!(total, 40);
    assert_eq!(sb.ledger().transactions().filter(|t| t.idempotency_key.is_some()).count(), 40);
}

/// The Databricks for_each shape: `pfsync run --steps payouts --shard I/4` as four processes at once over
/// 10,000 payouts. Each payout is paid exactly once, and together the shards pay all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shard_processes_at_once_pay_10000_payouts_each_exactly_once() {
    let sb = sandbox(200).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let rows = crate::payouts::n_payouts(10_000, "shard");
    crate::payouts::write_pending(&wh, &crate::payouts::as_refs(&rows)).await;
    let children: Vec<_> = (0..4)
        .map(|i| {
            pfsync()
                .sandbox(&sb)
                .args(["-q", "--run-id", &format!("shard-run-{i}")])
                .warehouse(dir.path())
                .args(["run", "--steps", "payouts", "--shard", &format!("{i}/4"), "--concurrency", "16"])
                .arg("--batch-size")
                .arg("500")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> =
        tokio::task::block_in_place(|| children.into_iter().map(|c| c.wait_with_output().unwrap()).collect());
    let mut completed = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "shard {i}: {out}{}", String::from_utf8_lossy(&o.stderr));
        // "completed N, ..." from the payouts summary line.
        let n: u64 = out
            .split("completed ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("shard {i} summary: {out}"));
        completed.push(n);
    }
    println!("payouts per shard: {completed:?}");
    assert!(completed.iter().all(|&n| n > 1_500), "each shard takes a share: {completed:?}");
    assert_eq!(completed.iter().sum::<u64>(), 10_000, "together they take all: {completed:?}");
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_paid_once(&sb, PaidBy::Key, &ids, "four shards at once");
    assert_eq!(sb.ledger().transactions().filter(|t| t.idempotency_key.is_some()).count(), 10_000);
}

/// `pfsync sql --format arrow` is for programs (scripts/sql-engines.py compares it with Spark): an Arrow IPC
/// stream and nothing else on stdout, every row unless --max-rows says otherwise, each value with the
/// table's type (exact cents, a NULL that is not an empty string). The text table keeps its 100-row cap.
#[tokio::test]
async fn sql_as_an_arrow_stream_keeps_every_row_and_its_exact_type() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Decimal128Type};
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let rows: Vec<(String, String)> = (1..=150).map(|i| (format!("p-{i:03}"), format!("{i}.{:02}", i % 100))).collect();
    let pending: Vec<_> = rows.iter().map(|(id, amount)| (id.as_str(), "agent-000001", amount.as_str(), "r")).collect();
    crate::payouts::write_pending(&wh, &pending).await;
    let query = "SELECT payout_id, amount_usd, CASE WHEN payout_id = 'p-001' THEN '' END AS maybe \
                 FROM purpleflea.payouts.pending ORDER BY payout_id";
    let sql = |extra: &[&str]| {
        let out = pfsync().arg("--warehouse").arg(dir.path()).args(["sql"]).args(extra).arg(query).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let read = |bytes: Vec<u8>| {
        let mut cursor = std::io::Cursor::new(bytes);
        let reader = arrow::ipc::reader::StreamReader::try_new(&mut cursor, None).unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(cursor.position() as usize, cursor.get_ref().len(), "nothing but the stream on stdout");
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    };

    let all = read(sql(&["--format", "arrow"]));
    assert_eq!(all.num_rows(), 150, "no default row cap");
    assert_eq!(all.schema().field(1).data_type(), &DataType::Decimal128(18, 2));
    let amounts = all.column(1).as_primitive::<Decimal128Type>();
    assert_eq!(amounts.value_as_string(0), "1.01");
    assert_eq!(amounts.value_as_string(149), "150.50");
    let maybe = arrow::compute::cast(all.column(2), &DataType::Utf8).unwrap();
    assert!(maybe.is_valid(0) && maybe.as_string::<i32>().value(0).is_empty());
    assert!(maybe.is_null(1), "NULL stays NULL");
    assert_eq!(read(sql(&["--format", "arrow", "--max-rows", "5"])).num_rows(), 5);

    let table = String::from_utf8(sql(&[])).unwrap();
    assert!(table.ends_with("(100 rows)\n"), "{table}");
}
