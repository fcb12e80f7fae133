//! `pfsync mcp` driven by a real MCP client: the official Python SDK (`mcp` from PyPI), over stdio and over
//! streamable HTTP, against the sandbox and a temp warehouse synced by `pfsync sync`.
//!
//! The client is `tests/it/mcp_client.py` in the interpreter `PFSYNC_MCP_PYTHON` names (default: the venv
//! `.ci/run` installs it into, `~/.cache/pfsync-mcp-venv`). Without it the tests print a skip line, unless
//! `CI=true` or `PFSYNC_REQUIRE_MCP=1` makes that a failure. `PFSYNC_MCP_TEST_BIN` points them at another pfsync
//! binary than this build's (a shared target dir where another checkout's build may replace it).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use pfsync::provider::records::TxKind;
use pfsync::sandbox::Sandbox;
use serde_json::{Value, json};

use crate::common::{Missing, PfsyncCommand, count, pfsync_at, sandbox};

const KEY: &str = "pf_test_sandbox";
const TOKEN: &str = "mcp-test-token-0123456789abcdef0123456789";

/// The interpreter with the MCP Python SDK; `None` after a skip line when it is missing (outside CI).
pub(crate) fn python() -> Option<String> {
    let default = format!("{}/.cache/pfsync-mcp-venv/bin/python", std::env::var("HOME").unwrap_or("/root".into()));
    let py = std::env::var("PFSYNC_MCP_PYTHON").unwrap_or(default);
    let ok = Command::new(&py).args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    Missing {
        what: format!("{py} cannot import the MCP Python SDK"),
        fix: "pip install mcp into that venv, or set PFSYNC_MCP_PYTHON to a python that has it".into(),
        require: "PFSYNC_REQUIRE_MCP",
    }
    .skip_or_fail()
}

pub(crate) fn bin() -> String {
    std::env::var("PFSYNC_MCP_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pfsync").to_string())
}

pub(crate) fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/mcp_client.py")
}

/// A sandbox, a warehouse synced from it, and a config file with an `[mcp]` section.
pub(crate) struct Bed {
    sb: Sandbox,
    dir: tempfile::TempDir,
    py: String,
}

/// What one client session printed, and everything the server logged.
struct Run {
    outputs: Vec<Value>,
    logs: String,
}

impl Run {
    fn call(&self, i: usize) -> &Value {
        &self.outputs[i]
    }
}

impl Bed {
    async fn new(mcp: &str) -> Option<Bed> {
        let py = python()?;
        let sb = sandbox(30).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pfsync.toml"), format!("[mcp]\n{mcp}\n")).unwrap();
        let bed = Bed { sb, dir, py };
        crate::common::init(bed.dir.path().join("wh"));
        let out = tokio::task::block_in_place(|| bed.pfsync().arg("sync").output().unwrap());
        assert!(out.status.success(), "sync: {}", String::from_utf8_lossy(&out.stderr));
        Some(bed)
    }

    fn pfsync(&self) -> Command {
        let mut c = pfsync_at(bin());
        c.config(self.dir.path().join("pfsync.toml")).warehouse(self.dir.path().join("wh")).sandbox(&self.sb);
        c
    }

    /// The `[mcp]` section later sessions start with.
    fn set_mcp(&self, mcp: &str) {
        std::fs::write(self.dir.path().join("pfsync.toml"), format!("[mcp]\n{mcp}\n")).unwrap();
    }

    fn run(&self, args: &[&str]) {
        let out = tokio::task::block_in_place(|| self.pfsync().args(args).output().unwrap());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The pipeline's escrow: an upstream job's row of `purpleflea.escrow.actions`, run by `pfsync payouts`
    /// and synced. Its id.
    async fn pipeline_escrow(&self, amount: &str, seller: &str) -> String {
        use pfsync::payouts::requested::EscrowActionRow;
        use pfsync::tables::row::Row;
        use pfsync::tables::{CommitInfo, ESCROW_ACTIONS, open_or_create};
        let wh = pfsync::tables::Warehouse::local(&self.dir.path().join("wh")).unwrap();
        let commit = CommitInfo { run_id: "upstream".into(), step: "test" };
        let row = EscrowActionRow {
            action_id: "pipeline-esc-1".into(),
            action: Some("create".into()),
            escrow_id: None,
            create_action_id: None,
            buyer_agent_id: Some("databricks-pipeline-orchestrator".into()),
            seller_agent_id: Some(seller.into()),
            amount_usd: Some(pfsync::money::Usd::parse(amount).unwrap()),
            description: Some("sentiment labeling, 10k rows".into()),
            metadata: None,
            reason: Some("the pipeline's bounty".into()),
            requested_at: None,
            requested_by: Some("pipeline".into()),
        };
        let table = open_or_create(&wh, &ESCROW_ACTIONS, &commit).await.unwrap();
        table.write(vec![EscrowActionRow::to_batch(&[row]).unwrap()]).await.unwrap();
        self.run(&["payouts"]);
        self.run(&["sync"]);
        let escrow = self
            .sb
            .ledger()
            .escrows()
            .find(|e| e.amount_usd == pfsync::money::Usd::parse(amount).unwrap() && e.seller_agent_id == seller)
            .map(|e| e.escrow_id.clone());
        escrow.expect("the pipeline's escrow")
    }

    fn script(&self, steps: &Value) -> PathBuf {
        let path = self.dir.path().join(format!("script-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, steps.to_string()).unwrap();
        path
    }

    pub(crate) fn parse(stdout: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The client starts `pfsync mcp` itself and talks to it over stdin/stdout (its stderr comes through).
    fn stdio(&self, client: &str, steps: Value) -> Run {
        let script = self.script(&steps);
        let server = self.pfsync();
        let mut c = Command::new(&self.py);
        c.arg(client_script()).arg("stdio").arg(&script).arg(server.get_program());
        c.args(server.get_args()).args(["-v", "mcp", "--client", client]);
        c.env("PURPLEFLEA_API_KEY", KEY).env_remove("RUST_LOG");
        let out = tokio::task::block_in_place(|| c.output().unwrap());
        let logs = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "the MCP client failed:\n{logs}");
        Run { outputs: Self::parse(&out.stdout), logs }
    }

    /// `pfsync <args>` serving HTTP with the bearer token [`TOKEN`]: the server and the URL its first line gives.
    fn listen(&self, args: &[&str], stderr: Stdio) -> (std::process::Child, String) {
        let mut server = self
            .pfsync()
            .args(args)
            .env("PFSYNC_MCP_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{line}"));
        (server, url.to_string())
    }

    /// `pfsync mcp --listen 127.0.0.1:0`, and the client over streamable HTTP with `token`.
    fn http(&self, client: &str, token: &str, steps: Value) -> (Run, bool) {
        let (mut server, url) =
            self.listen(&["-v", "mcp", "--client", client, "--listen", "127.0.0.1:0"], Stdio::piped());
        let url = url.as_str();
        let script = self.script(&steps);
        let out = tokio::task::block_in_place(|| {
            Command::new(&self.py)
                .arg(client_script())
                .args(["http"])
                .arg(&script)
                .arg(url)
                .env("PFSYNC_MCP_TOKEN", token)
                .output()
                .unwrap()
        });
        let _ = server.kill();
        let mut logs = String::new();
        server.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
        let _ = server.wait();
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        (Run { outputs: Self::parse(&out.stdout), logs }, out.status.success())
    }

    async fn sql(&self) -> datafusion::prelude::SessionContext {
        let wh = pfsync::tables::Warehouse::local(&self.dir.path().join("wh")).unwrap();
        pfsync::tables::sql_context(&wh).await.unwrap()
    }

    fn txs(&self, kind: TxKind) -> usize {
        self.sb.ledger().transactions().filter(|t| t.kind == kind).count()
    }
}

pub(crate) fn call(name: &str, arguments: Value) -> Value {
    json!({"call": name, "arguments": arguments})
}

/// No tool result and no log line carries the API key (the client's stderr holds the server's logs).
fn assert_no_key(run: &Run) {
    for o in &run.outputs {
        assert!(!o.to_string().contains(KEY), "a tool result holds the API key: {o}");
    }
    assert!(!run.logs.contains(KEY), "the logs hold the API key:\n{}", run.logs);
    assert!(!run.logs.contains(TOKEN), "the logs hold the bearer token");
}

const EXECUTE_ALL: &str = "[mcp.policy]\nrequest_payout = \"execute\"\ncreate_escrow = \"execute\"\n\
                           release_escrow = \"execute\"\ndispute_escrow = \"execute\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_are_listed_with_schemas_over_stdio_and_http() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let stdio = bed.stdio("lister", json!([{"list_tools": true}]));
    let (http, ok) = bed.http("lister", TOKEN, json!([{"list_tools": true}]));
    assert!(ok, "{}", http.logs);
    for run in [&stdio, &http] {
        let tools = run.call(0)["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        for want in [
            "check_balance",
            "check_escrow_status",
            "get_escrow",
            "payout_status",
            "open_findings",
            "request_payout",
            "create_escrow",
            "release_escrow",
            "dispute_escrow",
            "mark_complete",
            "claim_faucet",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        for t in tools {
            let s = &t["inputSchema"];
            assert_eq!(s["type"], "object", "{t}");
            assert_eq!(s["additionalProperties"], false, "{t}");
            assert!(t["description"].as_str().unwrap().len() > 40, "an LLM can act on it: {t}");
            let props = s["properties"].as_object().unwrap();
            assert!(props.keys().all(|k| !k.contains("key")), "no key argument: {t}");
            for r in s["required"].as_array().unwrap() {
                assert!(props.contains_key(r.as_str().unwrap()), "{t}");
            }
        }
        for money in
            ["request_payout", "create_escrow", "release_escrow", "dispute_escrow", "mark_complete", "claim_faucet"]
        {
            let t = tools.iter().find(|t| t["name"] == money).unwrap();
            assert!(t["inputSchema"]["required"].as_array().unwrap().contains(&json!("request_id")), "{t}");
        }
        let payout = tools.iter().find(|t| t["name"] == "request_payout").unwrap();
        assert_eq!(payout["inputSchema"]["properties"]["amount_usd"]["type"], "number");
        // Purple Flea's own argument names: the faucet's agent_casino_id, the escrow server's escrow_id.
        let faucet = tools.iter().find(|t| t["name"] == "claim_faucet").unwrap();
        for arg in ["agent_id", "agent_casino_id"] {
            assert!(faucet["inputSchema"]["properties"].get(arg).is_some(), "{faucet}");
        }
        let complete = tools.iter().find(|t| t["name"] == "mark_complete").unwrap();
        assert!(complete["inputSchema"]["properties"].get("escrow_id").is_some(), "{complete}");
        assert!(complete["description"].as_str().unwrap().contains("seed"), "says where it works: {complete}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_balance_answers_what_the_wallets_table_holds_with_its_sync_time() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let agents = ["agent-000001", "agent-000007", "databricks-pipeline-orchestrator"];
    let steps: Vec<Value> = agents.iter().map(|a| call("check_balance", json!({"agent_id": a}))).collect();
    let stdio = bed.stdio("reader", Value::Array(steps.clone()));
    let (http, ok) = bed.http("reader", TOKEN, Value::Array(steps));
    assert!(ok, "{}", http.logs);
    let ctx = bed.sql().await;
    for run in [&stdio, &http] {
        for (i, agent) in agents.iter().enumerate() {
            let got = &run.call(i)["structured"];
            assert_eq!(run.call(i)["isError"], false, "{}", run.call(i));
            let rows = ctx
                .sql(&format!(
                    "SELECT balance_usd, CAST(last_synced_at AS VARCHAR) AS t FROM purpleflea.agents.wallets WHERE agent_id = '{agent}'"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let balance = rows[0].column(0).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap().value(0);
            assert_eq!(got["agent_id"], *agent);
            assert_eq!(got["balance_usd"].as_f64().unwrap(), balance, "{got}");
            assert!(got["last_synced_at"].as_str().is_some_and(|t| t.starts_with("20")), "{got}");
            assert!(got["wallets_synced_at"].as_str().is_some(), "{got}");
        }
        assert_no_key(run);
    }
    let unknown = bed.stdio("reader", json!([call("check_balance", json!({"agent_id": "agent-999999"}))]));
    assert_eq!(unknown.call(0)["isError"], true);
    assert!(unknown.call(0)["text"].as_str().unwrap().contains("not in purpleflea.agents.wallets"));
    // `live: true` asks the API now: after a payout the sync has not seen, it differs from the table.
    let run = bed.stdio(
        "reader",
        json!([
            call(
                "request_payout",
                json!({"request_id": "p", "agent_id": "agent-000001", "amount_usd": 3, "reason": "r"})
            ),
            call("check_balance", json!({"agent_id": "agent-000001", "live": true})),
            call("check_balance", json!({"agent_id": "agent-000001"})),
        ]),
    );
    let now: f64 = bed.sb.ledger().wallet("agent-000001").unwrap().balance_usd.to_string().parse().unwrap();
    assert_eq!(run.call(1)["structured"]["balance_usd"].as_f64().unwrap(), now, "{}", run.call(1));
    assert_eq!(run.call(1)["structured"]["source"], "the payments API, now");
    assert!((run.call(2)["structured"]["balance_usd"].as_f64().unwrap() - (now - 3.0)).abs() < 1e-9, "{}", run.call(2));
}

/// An agent's framework retries `release_escrow` with the same request id: one release at the provider,
/// the same answer twice. Over both transports; the API key shows in no result and no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_escrow_twice_with_one_request_id_releases_once() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let steps = |tag: &str| {
        json!([
            call(
                "create_escrow",
                json!({
                    "request_id": format!("esc-{tag}"), "buyer_agent_id": "databricks-pipeline-orchestrator",
                    "counterparty_agent_id": "agent-000003", "amount_usd": 25, "description": "sentiment labeling batch"
                })
            ),
            call(
                "release_escrow",
                json!({"request_id": format!("rel-{tag}"), "create_request_id": format!("esc-{tag}")})
            ),
            call(
                "release_escrow",
                json!({"request_id": format!("rel-{tag}"), "create_request_id": format!("esc-{tag}")})
            ),
            call(
                "request_payout",
                json!({
                    "request_id": "x", "agent_id": "agent-000001", "amount_usd": 1, "reason": "r", "casino_api_key": "pf_live_should_never_be_kept"
                })
            ),
        ])
    };
    let locks = bed.txs(TxKind::EscrowLock);
    let releases = bed.txs(TxKind::EscrowRelease);
    let stdio = bed.stdio("agent-a", steps("s"));
    assert_eq!(bed.txs(TxKind::EscrowLock), locks + 1);
    assert_eq!(bed.txs(TxKind::EscrowRelease), releases + 1, "one release for two calls");
    let (http, ok) = bed.http("agent-b", TOKEN, steps("h"));
    assert!(ok, "{}", http.logs);
    assert_eq!(bed.txs(TxKind::EscrowLock), locks + 2);
    assert_eq!(bed.txs(TxKind::EscrowRelease), releases + 2, "one release per request id");
    for run in [&stdio, &http] {
        let create = &run.call(0)["structured"];
        assert_eq!(create["status"], "completed", "{}", run.call(0));
        let escrow = create["escrow_id"].as_str().unwrap();
        let (first, second) = (&run.call(1), &run.call(2));
        assert_eq!(first["isError"], false, "{first}");
        assert_eq!(first["structured"]["status"], "completed", "{first}");
        assert_eq!(first["structured"]["escrow_id"], escrow);
        assert_eq!(first["structured"]["tx_id"], second["structured"]["tx_id"], "the retry answers the first result");
        assert_eq!(first["structured"]["attempts"], 1);
        let bad = &run.call(3);
        assert_eq!(bad["isError"], true);
        assert!(bad["text"].as_str().unwrap().contains("no key is ever passed"), "{bad}");
        assert_no_key(run);
    }
    // The audit table ties each request to its operation, and never keeps a key an agent sent.
    let ctx = bed.sql().await;
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool = 'release_escrow' AND decision = 'replayed'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE arguments LIKE '%pf_live_should_never_be_kept%'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE arguments LIKE '%casino_api_key%<dropped>%'")
            .await,
        2
    );
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.payouts.status s JOIN purpleflea.ops.mcp_calls c \
             ON s.operation_id = c.operation_id WHERE c.tool = 'release_escrow' AND s.status = 'completed'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.escrow.actions WHERE requested_by IN ('mcp:agent-a', 'mcp:agent-b')"
        )
        .await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_daily_limit_is_refused_with_a_reason_and_nothing_moves() {
    let policy = format!("max_per_call_usd = \"30.00\"\nmax_per_day_usd = \"40.00\"\n{EXECUTE_ALL}");
    let Some(bed) = Bed::new(&policy).await else { return };
    let pay = |id: &str, amount: f64| {
        call(
            "request_payout",
            json!({"request_id": id, "agent_id": "agent-000004", "amount_usd": amount, "reason": "bonus"}),
        )
    };
    let payouts = bed.txs(TxKind::Payout);
    let run = bed.stdio("spender", json!([pay("p1", 25.0), pay("p2", 20.0), pay("p3", 31.0), pay("p4", 15.0)]));
    assert_eq!(run.call(0)["structured"]["status"], "completed", "{}", run.call(0));
    let over = &run.call(1);
    assert_eq!(over["isError"], true, "{over}");
    assert!(over["text"].as_str().unwrap().contains("over the daily limit"), "{over}");
    assert!(over["text"].as_str().unwrap().contains("Nothing was moved"), "{over}");
    assert!(run.call(2)["text"].as_str().unwrap().contains("over the limit per call"), "{}", run.call(2));
    assert_eq!(run.call(3)["structured"]["status"], "completed", "40.00 is within the limit: {}", run.call(3));
    assert_eq!(bed.txs(TxKind::Payout), payouts + 2, "the refused calls moved nothing");
    // Over HTTP the same client is held to the same day's total.
    let (http, ok) = bed.http("spender", TOKEN, json!([pay("p5", 0.01)]));
    assert!(ok, "{}", http.logs);
    assert!(http.call(0)["text"].as_str().unwrap().contains("over the daily limit"), "{}", http.call(0));
    assert_eq!(bed.txs(TxKind::Payout), payouts + 2);
    let ctx = bed.sql().await;
    assert_eq!(count(&ctx, "SELECT count(*) FROM purpleflea.payouts.pending").await, 2, "refused calls queue nothing");
    assert_eq!(count(&ctx, "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE decision = 'refused'").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_and_queue_policies_behave_as_stated() {
    let policy = "allowed_agents = [\"agent-000005\", \"agent-000006\"]\n[mcp.policy]\nrequest_payout = \"queue\"\n\
                  create_escrow = \"deny\"\n";
    let Some(bed) = Bed::new(policy).await else { return };
    let before = bed.sb.ledger().transactions().count();
    let run = bed.stdio(
        "queuer",
        json!([
            call("request_payout", json!({"request_id": "q1", "agent_id": "agent-000005", "amount_usd": "7.25", "reason": "queued"})),
            call("request_payout", json!({"request_id": "q1", "agent_id": "agent-000005", "amount_usd": "7.25", "reason": "queued"})),
            call("create_escrow", json!({"request_id": "c1", "buyer_agent_id": "agent-000005", "counterparty_agent_id": "agent-000006", "amount_usd": 5, "description": "denied"})),
            call("release_escrow", json!({"request_id": "r1", "escrow_id": "esc_000000000001"})),
            call("request_payout", json!({"request_id": "q2", "agent_id": "agent-000009", "amount_usd": 1, "reason": "not allowed"})),
            call("payout_status", json!({"request_id": "q1"})),
            call("request_payout", json!({"request_id": "q1", "agent_id": "agent-000005", "amount_usd": "9.00", "reason": "queued"})),
            call("claim_faucet", json!({"request_id": "f1", "agent_id": "agent-000005"})),
        ]),
    );
    let queued = &run.call(0)["structured"];
    assert_eq!(queued["status"], "queued", "{}", run.call(0));
    assert_eq!(queued["operation_id"], "mcp:queuer:q1");
    assert_eq!(queued["queued_in"], "purpleflea.payouts.pending");
    assert_eq!(run.call(1)["structured"]["status"], "queued", "a retry is the same queued request");
    for i in [2, 3] {
        assert_eq!(run.call(i)["isError"], true);
        assert!(run.call(i)["text"].as_str().unwrap().contains("policy: deny"), "{}", run.call(i));
    }
    assert!(run.call(4)["text"].as_str().unwrap().contains("allowlist"), "{}", run.call(4));
    assert_eq!(run.call(5)["structured"]["status"], "queued");
    assert!(run.call(6)["text"].as_str().unwrap().contains("already used for a different request"), "{}", run.call(6));
    assert!(
        run.call(7)["text"].as_str().unwrap().contains("policy: deny"),
        "a tool not named is denied: {}",
        run.call(7)
    );
    assert_eq!(bed.sb.ledger().transactions().count(), before, "queue and deny move nothing");
    let ctx = bed.sql().await;
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.payouts.pending WHERE payout_id = 'mcp:queuer:q1' AND requested_by = 'mcp:queuer' \
             AND amount_usd = 7.25"
        )
        .await,
        1
    );
    assert_eq!(count(&ctx, "SELECT count(*) FROM purpleflea.escrow.actions").await, 0, "deny writes nothing");
    // The scheduled job pays the queued request, once.
    let paid = || {
        bed.sb
            .ledger()
            .transactions()
            .filter(|t| {
                t.kind == TxKind::Payout && t.idempotency_key.as_deref().is_some_and(|k| k.ends_with(":mcp:queuer:q1"))
            })
            .count()
    };
    assert_eq!(paid(), 0);
    let out = tokio::task::block_in_place(|| bed.pfsync().arg("payouts").output().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(paid(), 1);
    let after = bed.stdio("queuer", json!([call("payout_status", json!({"request_id": "q1"}))]));
    assert_eq!(after.call(0)["structured"]["status"], "completed", "{}", after.call(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bearer_token_gets_401_and_no_tool_runs() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let before = bed.sb.ledger().transactions().count();
    let steps = json!([call(
        "request_payout",
        json!({"request_id": "t1", "agent_id": "agent-000001", "amount_usd": 1, "reason": "x"})
    )]);
    let (run, ok) = bed.http("intruder", "not-the-token", steps);
    assert!(!ok, "the client must fail: {:?}", run.outputs);
    assert!(run.outputs.is_empty());
    assert!(run.logs.contains("missing or wrong bearer token"), "the server says why: {}", run.logs);
    assert_no_key(&run);
    assert!(!run.logs.contains("not-the-token"), "the presented token is not logged");
    assert_eq!(bed.sb.ledger().transactions().count(), before);
    let ctx = bed.sql().await;
    assert_eq!(count(&ctx, "SELECT count(*) FROM purpleflea.ops.mcp_calls").await, 0, "no tool ran");

    // Raw HTTP: no header, a wrong one, and a scheme other than Bearer are all 401 before any tool.
    let (mut server, url) = bed.listen(&["mcp", "--listen", "127.0.0.1:0"], Stdio::null());
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"request_payout","arguments":{}}}"#;
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some(&format!("Basic {TOKEN}")[..])] {
        let mut r = http.post(&url).header("content-type", "application/json").body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(bed.sb.ledger().transactions().count(), before);
}

#[test]
fn http_refuses_a_non_loopback_listen_and_a_missing_token() {
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = pfsync_at(bin());
        c.env("PURPLEFLEA_API_KEY", KEY).args(["--api-url", "http://127.0.0.1:9/api"]);
        c.warehouse("/nonexistent/never-created").arg("mcp").args(args);
        if let Some(t) = token {
            c.env("PFSYNC_MCP_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(&["--listen", "127.0.0.1:0"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PFSYNC_MCP_TOKEN"));
    let out = run(&["--listen", "0.0.0.0:0"], Some(TOKEN));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    let out = run(&["--client", "Bad Name"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// rmcp refuses a `Host` that is not loopback (DNS rebinding); `--allow-host` adds the name a TLS proxy in
/// front forwards. The token is checked first either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_hosts_and_allowed_names_are_served() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let (mut server, url) =
        bed.listen(&["mcp", "--listen", "127.0.0.1:0", "--allow-host", "mcp.example.com"], Stdio::null());
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let http = reqwest::Client::new();
    let status = |host: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut r = http
                .post(&url)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(init);
            if !host.is_empty() {
                r = r.header("host", host);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status("").await, 200, "loopback");
    assert_eq!(status("mcp.example.com").await, 200, "an allowed name");
    assert!((400..500).contains(&status("evil.example.net").await), "any other Host is refused");
    let _ = server.kill();
    let _ = server.wait();
}

/// `claim_faucet` on the seed's API: the provider credits an agent once (409 `invalid_state` after), and a
/// retry with the same request id answers the first claim (from the audit row) without a second request;
/// a new request id for the same agent is told it was claimed. `mark_complete` has no endpoint there: a
/// tool error says so. A queued faucet claim would never run: such a policy stops the server at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_faucet_credits_once_per_request_id_and_mark_complete_says_the_seed_has_no_complete_step() {
    let policy = format!("{EXECUTE_ALL}claim_faucet = \"execute\"\nmark_complete = \"execute\"\n");
    let Some(bed) = Bed::new(&policy).await else { return };
    let faucets = bed.txs(TxKind::Faucet);
    let before = bed.sb.ledger().wallet("agent-000002").unwrap().balance_usd;
    let claim = |id: &str, arg: &str, agent: &str| call("claim_faucet", json!({"request_id": id, arg: agent}));
    let steps = json!([
        claim("f1", "agent_id", "agent-000002"),
        claim("f1", "agent_id", "agent-000002"),
        claim("f2", "agent_casino_id", "agent-000002"),
        claim("f1", "agent_id", "agent-000008"),
        call("request_payout", json!({"request_id": "f1", "agent_id": "agent-000002", "amount_usd": 1, "reason": "r"})),
        call("mark_complete", json!({"request_id": "m1", "escrow_id": "esc_000000000001"})),
        call("check_balance", json!({"agent_id": "agent-000002", "live": true})),
    ]);
    let (run, ok) = bed.http("claimer", TOKEN, steps);
    assert!(ok, "{}", run.logs);
    let first = &run.call(0);
    assert_eq!(first["isError"], false, "{first}");
    assert_eq!(first["structured"]["status"], "credited", "{first}");
    assert_eq!(first["structured"]["amount_usd"], "10", "the sandbox's faucet amount: {first}");
    let retry = &run.call(1);
    assert_eq!(retry["structured"]["claim_id"], first["structured"]["claim_id"], "the first result: {retry}");
    assert_eq!(retry["structured"]["replayed"], true, "{retry}");
    assert_eq!(bed.txs(TxKind::Faucet), faucets + 1, "one claim for three calls");
    let again = &run.call(2);
    assert_eq!(again["isError"], true, "{again}");
    assert!(again["text"].as_str().unwrap().contains("already claimed"), "{again}");
    assert!(again["text"].as_str().unwrap().contains("Nothing was credited"), "{again}");
    for i in [3, 4] {
        assert!(
            run.call(i)["text"].as_str().unwrap().contains("already used for a different request"),
            "{}",
            run.call(i)
        );
    }
    let complete = &run.call(5);
    assert_eq!(complete["isError"], true, "{complete}");
    assert!(complete["text"].as_str().unwrap().contains("no complete step"), "{complete}");
    let now = bed.sb.ledger().wallet("agent-000002").unwrap().balance_usd;
    assert_eq!(now, before.checked_add(pfsync::money::Usd::parse("10.00").unwrap()).unwrap());
    assert_eq!(run.call(6)["structured"]["balance_usd"].as_f64().unwrap(), now.to_string().parse::<f64>().unwrap());
    assert_no_key(&run);
    let ctx = bed.sql().await;
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool = 'claim_faucet' AND decision = 'execute'"
        )
        .await,
        2,
        "f1 once, f2 once (refused by the provider)"
    );
    assert_eq!(
        count(
            &ctx,
            "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool = 'claim_faucet' AND decision = 'replayed' \
             AND NOT is_error AND amount_usd = 10"
        )
        .await,
        1
    );
    assert_eq!(count(&ctx, "SELECT count(*) FROM purpleflea.payouts.pending").await, 0, "f1's id paid nothing");

    // A queued claim (or complete) would never run: the policy is refused before the server starts.
    let cfg = bed.dir.path().join("queued.toml");
    std::fs::write(&cfg, "[mcp.policy]\nclaim_faucet = \"queue\"\n").unwrap();
    let out = pfsync_at(bin())
        .env("PURPLEFLEA_API_KEY", KEY)
        .config(&cfg)
        .warehouse("/nonexistent/never-created")
        .arg("mcp")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would never run"));
}

/// Releases and disputes count toward the limits at the escrow's amount: with 10.00 per call and 20.00 a day,
/// a client that was refused an 11.00 payout cannot release the pipeline's 300.00 escrow either (not its own;
/// nor when the policy lets it act on others' escrows: 300.00 is over the limit per call), and its own 10.00
/// escrow's create and release fill its day. Every call's audit row carries the amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_limit_cannot_release_an_escrow_and_releases_count_at_the_escrows_amount() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let seller = "agent-000003";
    let escrow = bed.pipeline_escrow("300.00", seller).await;
    let seller_before = bed.sb.ledger().wallet(seller).unwrap().balance_usd;
    let releases = bed.txs(TxKind::EscrowRelease);
    let limits = "max_per_call_usd = \"10.00\"\nmax_per_day_usd = \"20.00\"\n";
    bed.set_mcp(&format!("{limits}{EXECUTE_ALL}"));
    let pay = |id: &str, amount: &str| {
        call(
            "request_payout",
            json!({"request_id": id, "agent_id": "agent-000004", "amount_usd": amount, "reason": "r"}),
        )
    };
    let release = |id: &str| call("release_escrow", json!({"request_id": id, "escrow_id": escrow}));
    let run = bed.stdio(
        "spender",
        json!([
            pay("p1", "11.00"),
            release("r1"),
            call("dispute_escrow", json!({"request_id": "d1", "escrow_id": escrow, "reason": "no"}))
        ]),
    );
    assert!(run.call(0)["text"].as_str().unwrap().contains("over the limit per call"), "{}", run.call(0));
    for i in [1, 2] {
        let text = run.call(i)["text"].as_str().unwrap();
        assert!(text.contains("was not created by client \"spender\""), "{}", run.call(i));
        assert!(text.contains("Nothing was moved"), "{text}");
    }
    // Allowed to act on others' escrows, the client is still held to the limit at the escrow's amount.
    bed.set_mcp(&format!("{limits}other_escrows = [\"*\"]\n{EXECUTE_ALL}"));
    let run = bed.stdio("spender", json!([release("r2")]));
    let text = run.call(0)["text"].as_str().unwrap();
    assert!(text.contains("amount 300.00 USD is over the limit per call of 10.00 USD"), "{text}");
    assert_eq!(bed.txs(TxKind::EscrowRelease), releases, "nothing released");
    assert_eq!(bed.sb.ledger().wallet(seller).unwrap().balance_usd, seller_before);
    assert_eq!(bed.sb.ledger().escrow(&escrow).unwrap().status.as_str(), "funded");
    // Its own escrow: the create (10.00) and its release (10.00) fill the day; one cent more is refused.
    let run = bed.stdio(
        "spender",
        json!([
            call(
                "create_escrow",
                json!({"request_id": "e1", "buyer_agent_id": "databricks-pipeline-orchestrator",
                "counterparty_agent_id": "agent-000005", "amount_usd": "10.00", "description": "a task"})
            ),
            call("release_escrow", json!({"request_id": "r3", "create_request_id": "e1"})),
            pay("p2", "0.01"),
            call("release_escrow", json!({"request_id": "r3", "create_request_id": "e1"})),
        ]),
    );
    assert_eq!(run.call(0)["structured"]["status"], "completed", "{}", run.call(0));
    assert_eq!(run.call(1)["structured"]["status"], "completed", "{}", run.call(1));
    assert!(run.call(2)["text"].as_str().unwrap().contains("over the daily limit"), "{}", run.call(2));
    assert!(run.call(2)["text"].as_str().unwrap().contains("has requested 20.00 USD today"), "{}", run.call(2));
    assert_eq!(run.call(3)["structured"]["tx_id"], run.call(1)["structured"]["tx_id"], "a retry, not a new release");
    assert_eq!(bed.txs(TxKind::EscrowRelease), releases + 1);
    let ctx = bed.sql().await;
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool IN ('release_escrow', 'dispute_escrow') AND amount_usd IS NULL").await,
        0,
        "every release and dispute row carries its amount"
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool IN ('release_escrow', 'dispute_escrow') AND amount_usd = 300 AND decision = 'refused'").await,
        3
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool = 'release_escrow' AND amount_usd = 10 AND decision IN ('execute', 'replayed')").await,
        2
    );
}

/// A client acts only on the escrows it created, and reads only its own operations: another client's
/// release and dispute of them are refused, and so is its read of their status; the creator releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_act_on_or_read_another_clients_escrow() {
    let Some(bed) = Bed::new(EXECUTE_ALL).await else { return };
    let create = call(
        "create_escrow",
        json!({"request_id": "e1", "buyer_agent_id": "databricks-pipeline-orchestrator",
               "counterparty_agent_id": "agent-000006", "amount_usd": "12.00", "description": "a task"}),
    );
    let alice = bed.stdio("alice", json!([create]));
    let escrow = alice.call(0)["structured"]["escrow_id"].as_str().unwrap().to_string();
    let releases = bed.txs(TxKind::EscrowRelease);
    let refunds = bed.txs(TxKind::EscrowRefund);
    let mallory = bed.stdio(
        "mallory",
        json!([
            call("release_escrow", json!({"request_id": "r1", "escrow_id": escrow})),
            call("dispute_escrow", json!({"request_id": "d1", "escrow_id": escrow, "reason": "mine now"})),
            call("payout_status", json!({"operation_id": "mcp:alice:e1"})),
            call("payout_status", json!({"request_id": "e1"})),
        ]),
    );
    for i in [0, 1] {
        let text = mallory.call(i)["text"].as_str().unwrap();
        assert!(text.contains(&format!("escrow {escrow} was not created by client \"mallory\"")), "{text}");
    }
    let text = mallory.call(2)["text"].as_str().unwrap();
    assert!(text.contains("is not a request of client \"mallory\""), "{text}");
    assert!(
        mallory.call(3)["text"].as_str().unwrap().contains("no request mcp:mallory:e1 is known"),
        "{}",
        mallory.call(3)
    );
    assert_eq!((bed.txs(TxKind::EscrowRelease), bed.txs(TxKind::EscrowRefund)), (releases, refunds), "nothing moved");
    let alice = bed.stdio(
        "alice",
        json!([
            call("payout_status", json!({"operation_id": "mcp:alice:e1"})),
            call("release_escrow", json!({"request_id": "r1", "escrow_id": escrow})),
        ]),
    );
    assert_eq!(alice.call(0)["structured"]["status"], "completed", "{}", alice.call(0));
    assert_eq!(alice.call(1)["structured"]["status"], "completed", "its creator releases it: {}", alice.call(1));
    assert_eq!(bed.txs(TxKind::EscrowRelease), releases + 1);
    let ctx = bed.sql().await;
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM purpleflea.escrow.actions WHERE requested_by = 'mcp:mallory'").await,
        0,
        "a refused call writes nothing"
    );
}

/// The bearer token is refused at start (exit 2) when it is shorter than 32 bytes, or when it is one of the
/// provider keys pfsync holds: the payer's, or an `[[provider.agent_keys]]` key. Neither is ever echoed.
#[test]
fn http_refuses_a_short_token_and_one_that_is_a_provider_key() {
    let dir = tempfile::tempdir().unwrap();
    // A warehouse that cannot be made: a server that got past the token would stop there, not serve.
    std::fs::write(dir.path().join("file"), "").unwrap();
    let api_key = "pf_live_0123456789abcdef0123456789abcdef";
    let agent_key = "pf_live_agent_fedcba9876543210fedcba9876543210";
    let live = dir.path().join("live.toml");
    std::fs::write(
        &live,
        "[provider]\nkind = \"live\"\ncasino_url = \"http://127.0.0.1:9/api/v1\"\nescrow_url = \"http://127.0.0.1:9\"\n\
         faucet_url = \"http://127.0.0.1:9\"\n[[provider.agent_keys]]\nenv = \"PFSYNC_TEST_AGENT_KEY\"\n",
    )
    .unwrap();
    let run = |token: &str, config: Option<&std::path::Path>| {
        let mut c = Command::new(bin());
        c.env("PURPLEFLEA_API_KEY", api_key).env("PFSYNC_TEST_AGENT_KEY", agent_key).env("PFSYNC_MCP_TOKEN", token);
        if let Some(cfg) = config {
            c.arg("--config").arg(cfg);
        }
        c.args(["--api-url", "http://127.0.0.1:9/api", "--warehouse"]).arg(dir.path().join("file/wh"));
        let out = c.args(["mcp", "--listen", "127.0.0.1:0"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains(api_key) && !stderr.contains(agent_key), "a key is echoed: {stderr}");
        (out.status.code(), stderr)
    };
    let (code, stderr) = run("0123456789abcdef0123456789abcde", None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the bearer token is 31 bytes; it must be at least 32"), "{stderr}");
    let (code, stderr) = run(api_key, None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the bearer token is a Purple Flea key pfsync holds"), "{stderr}");
    let (code, stderr) = run(agent_key, Some(&live));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the bearer token is a Purple Flea key pfsync holds"), "{stderr}");
}
