//! `pfsync mcp` with `[provider] kind = "live"` against Purple Flea's own services on the test bed
//! ([`crate::live_bed`]), driven by the official MCP Python SDK (as `tests/it/mcp.rs`): balances asked of the
//! casino with each agent's own key, an escrow's whole life (create, the seller's complete, release) once per
//! request id however often the agent calls, and a faucet claim where there is no faucet (the bed runs none).

use std::path::Path;
use std::process::Command;

use pfsync::micros::Micros;
use serde_json::{Value, json};

use crate::common::count;
use crate::live_bed::{LiveBed, bed};
use crate::live_payouts::get;
use crate::mcp::{Bed, call, client_script, python};

/// An agent of the bed: (agent_id, api_key).
struct Agent {
    id: String,
    key: String,
}

/// The config: the bed's casino and escrow, the seller's key held, a faucet URL where nothing listens (the
/// bed has no faucet service), every write tool executed, and `mcp` added to the `[mcp]` section.
fn config(dir: &Path, bed: &LiveBed, mcp: &str) -> std::path::PathBuf {
    let text = format!(
        "[provider]\nkind = \"live\"\ncasino_url = \"{}\"\nescrow_url = \"{}\"\nfaucet_url = \"http://127.0.0.1:9\"\n\
         clock_skew_secs = 2\n[[provider.agent_keys]]\nenv = \"PF_KEY_1\"\n\
         [mcp]\n{mcp}[mcp.policy]\ncreate_escrow = \"execute\"\nrelease_escrow = \"execute\"\n\
         mark_complete = \"execute\"\nclaim_faucet = \"execute\"\ndispute_escrow = \"execute\"\n",
        bed.casino_url, bed.escrow_url
    );
    let p = dir.join("pfsync.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// One MCP session over stdio: the client starts `pfsync mcp`, which holds the payer's and the seller's keys;
/// `mcp` is added to the `[mcp]` section.
fn session(
    py: &str,
    dir: &Path,
    (bed, mcp): (&LiveBed, &str),
    payer: &Agent,
    seller: &Agent,
    steps: Value,
) -> (Vec<Value>, String) {
    let script = dir.join(format!("script-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&script, steps.to_string()).unwrap();
    crate::common::init(dir.join("wh"));
    let out = Command::new(py)
        .arg(client_script())
        .arg("stdio")
        .arg(&script)
        .arg(crate::mcp::bin())
        .arg("--config")
        .arg(config(dir, bed, mcp))
        .arg("--warehouse")
        .arg(dir.join("wh"))
        .args(["--timeout-secs", "10", "-v", "mcp", "--client", "live-agent"])
        .env_remove("RUST_LOG")
        .env("PURPLEFLEA_API_KEY", &payer.key)
        .env("PF_KEY_1", &seller.key)
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "the MCP client failed:\n{logs}");
    let outputs = Bed::parse(&out.stdout);
    for o in &outputs {
        for k in [&payer.key, &seller.key] {
            assert!(!o.to_string().contains(k.as_str()), "a tool result holds an agent key: {o}");
        }
    }
    for k in [&payer.key, &seller.key] {
        assert!(!logs.contains(k.as_str()), "the logs hold an agent key");
    }
    (outputs, logs)
}

fn ok(v: &Value) -> &Value {
    assert_eq!(v["isError"], false, "{v}");
    &v["structured"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mcp_balances_and_an_escrow_created_completed_and_released_once_per_request_id() {
    let Some(py) = python() else { return };
    let Some(bed) = bed() else { return };
    let mut made = bed.agents(3).into_iter().map(|(id, key, _)| Agent { id, key });
    let (payer, seller, stranger) = (made.next().unwrap(), made.next().unwrap(), made.next().unwrap());
    bed.fund(&payer.id, 50.0);
    let dir = tempfile::tempdir().unwrap();
    let create = call(
        "create_escrow",
        json!({
            "request_id": "e1", "buyer_agent_id": payer.id, "counterparty_agent_id": seller.id,
            "amount_usd": 10, "description": "sentiment labeling batch"
        }),
    );
    let complete = call("mark_complete", json!({"request_id": "m1", "create_request_id": "e1"}));
    let release = call("release_escrow", json!({"request_id": "r1", "create_request_id": "e1"}));
    let faucet = call("claim_faucet", json!({"request_id": "f1", "agent_casino_id": seller.id}));
    let steps = json!([
        call("check_balance", json!({"agent_id": payer.id, "live": true})),
        call("check_balance", json!({"agent_id": stranger.id, "live": true})),
        create.clone(),
        create,
        complete.clone(),
        complete,
        release.clone(),
        release,
        faucet.clone(),
        faucet,
    ]);
    let (run, _) = session(&py, dir.path(), (bed, ""), &payer, &seller, steps);
    assert_eq!(run.len(), 10, "{run:?}");

    // Balances: from the casino now, with the agent's own key; no key of the stranger is held.
    let b = ok(&run[0]);
    assert_eq!(b["agent_id"], payer.id.as_str());
    assert_eq!(b["balance_usd"], "50", "{b}");
    assert_eq!(b["source"], "the payments API, now");
    assert_eq!(run[1]["isError"], true);
    assert!(run[1]["text"].as_str().unwrap().contains("holds no key"), "{}", run[1]);

    // The escrow: one create, one complete, one release, each answered the same way twice.
    let (c1, c2) = (ok(&run[2]), ok(&run[3]));
    assert_eq!(c1["status"], "completed", "{c1}");
    let escrow = c1["escrow_id"].as_str().unwrap().to_string();
    assert!(escrow.starts_with("esc_"), "{c1}");
    assert_eq!(c2["escrow_id"], escrow.as_str(), "the retry answers the first create");
    let (m1, m2) = (ok(&run[4]), ok(&run[5]));
    assert_eq!(m1["status"], "completed", "{m1}");
    assert_eq!(m1["escrow_id"], escrow.as_str());
    assert_eq!(m1["counterparty_agent_id"], seller.id.as_str());
    assert!(m1["completed_at"].is_string(), "{m1}");
    assert_eq!(m2["completed_at"], m1["completed_at"], "the first result: {m2}");
    assert_eq!(m2["replayed"], true, "{m2}");
    let (r1, r2) = (ok(&run[6]), ok(&run[7]));
    assert_eq!(r1["status"], "completed", "{r1}");
    assert_eq!(r1["tx_id"], format!("{escrow}_release").as_str(), "{r1}");
    assert_eq!(r2["tx_id"], r1["tx_id"], "the retry answers the first release");
    assert_eq!(r1["attempts"], 1, "released once: {r1}");

    // No faucet on the bed: a readable error, nothing credited, and the retry may try again.
    for f in [&run[8], &run[9]] {
        assert_eq!(f["isError"], true, "{f}");
        let text = f["text"].as_str().unwrap();
        assert!(text.contains("did not complete") && text.contains("same request_id is safe"), "{text}");
    }

    // What the services hold: the escrow went funded -> completed -> released once; the money adds up.
    let esc = get(&format!("{}/escrow/{escrow}", bed.escrow_url), None).await;
    assert_eq!(esc["status"], "released", "{esc}");
    assert!(esc["completed_at"].is_string(), "completed by the seller's key before the release: {esc}");
    let balance = |a: &Agent| {
        let url = format!("{}/auth/balance", bed.casino_url);
        let key = a.key.clone();
        async move { Micros::parse(&get(&url, Some(&key)).await["balance_usd"].to_string()).unwrap() }
    };
    assert_eq!(balance(&payer).await, Micros::parse("40").unwrap(), "one lock of 10");
    assert_eq!(balance(&seller).await, Micros::parse("9.9").unwrap(), "one release: 10 less the 1% commission");
    let ledger = get(&format!("{}/auth/ledger", bed.casino_url), Some(&payer.key)).await;
    let locks = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("escrow_lock")))
        .count();
    assert_eq!(locks, 1, "{ledger}");

    // A later session: the escrow read from the service, the balance after, and a new complete request on
    // a completed escrow (answered from its state, nothing sent twice).
    let (later, _) = session(
        &py,
        dir.path(),
        (bed, ""),
        &payer,
        &seller,
        json!([
            call("get_escrow", json!({"escrow_id": escrow, "live": true})),
            call("check_balance", json!({"agent_id": seller.id, "live": true})),
            call("mark_complete", json!({"request_id": "m2", "escrow_id": escrow})),
            call("mark_complete", json!({"request_id": "m1", "escrow_id": escrow})),
        ]),
    );
    let e = ok(&later[0]);
    assert_eq!(e["status"], "released", "{e}");
    assert_eq!(e["seller_agent_id"], seller.id.as_str());
    assert_eq!(ok(&later[1])["balance_usd"], "9.9");
    let m = ok(&later[2]);
    assert_eq!(m["status"], "released", "{m}");
    assert!(m["detail"].as_str().unwrap().contains("before this call"), "{m}");
    assert!(
        later[3]["text"].as_str().unwrap().contains("already used for a different request"),
        "m1 named its escrow by create_request_id: {}",
        later[3]
    );

    let wh = pfsync::tables::Warehouse::local(&dir.path().join("wh")).unwrap();
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let q = |tool: &str, decision: &str| {
        format!("SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool = '{tool}' AND decision = '{decision}'")
    };
    assert_eq!(count(&ctx, &q("mark_complete", "execute")).await, 2, "m1 once, m2 once");
    assert_eq!(count(&ctx, &q("mark_complete", "replayed")).await, 2);
    assert_eq!(count(&ctx, &q("release_escrow", "replayed")).await, 1);
    assert_eq!(count(&ctx, &q("claim_faucet", "execute")).await, 2, "tried twice: no faucet answered");
}

/// A live escrow's dispute freezes it for Purple Flea's staff with no endpoint to resolve it, as the provider
/// declares (`dispute_resolvable: false`): `dispute_escrow = "execute"` alone is denied, and nothing is sent;
/// with `unresolvable_disputes = "execute"` as well, the operator has said so and the dispute goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mcp_denies_a_dispute_the_provider_cannot_resolve_unless_the_policy_says_so() {
    let Some(py) = python() else { return };
    let Some(bed) = bed() else { return };
    let mut made = bed.agents(2).into_iter().map(|(id, key, _)| Agent { id, key });
    let (payer, seller) = (made.next().unwrap(), made.next().unwrap());
    bed.fund(&payer.id, 20.0);
    let dir = tempfile::tempdir().unwrap();
    let create = call(
        "create_escrow",
        json!({
            "request_id": "e1", "buyer_agent_id": payer.id, "counterparty_agent_id": seller.id,
            "amount_usd": 5, "description": "a task that went wrong"
        }),
    );
    let dispute = |id: &str| {
        call("dispute_escrow", json!({"request_id": id, "create_request_id": "e1", "reason": "not delivered"}))
    };
    let (run, _) = session(&py, dir.path(), (bed, ""), &payer, &seller, json!([create, dispute("d1")]));
    let escrow = ok(&run[0])["escrow_id"].as_str().unwrap().to_string();
    assert_eq!(run[1]["isError"], true, "{}", run[1]);
    let text = run[1]["text"].as_str().unwrap();
    assert!(text.contains("unresolvable_disputes") && text.contains("Nothing was moved"), "{text}");
    let esc = get(&format!("{}/escrow/{escrow}", bed.escrow_url), None).await;
    assert_eq!(esc["status"], "funded", "no dispute was sent: {esc}");

    let (run, _) = session(
        &py,
        dir.path(),
        (bed, "unresolvable_disputes = \"execute\"\n"),
        &payer,
        &seller,
        json!([dispute("d2")]),
    );
    assert_eq!(ok(&run[0])["status"], "completed", "{}", run[0]);
    let esc = get(&format!("{}/escrow/{escrow}", bed.escrow_url), None).await;
    assert_eq!(esc["status"], "disputed", "{esc}");

    let wh = pfsync::tables::Warehouse::local(&dir.path().join("wh")).unwrap();
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let q = "SELECT count(*) FROM purpleflea.ops.mcp_calls WHERE tool = 'dispute_escrow' AND amount_usd = 5";
    assert_eq!(count(&ctx, &format!("{q} AND decision = 'deny'")).await, 1);
    assert_eq!(count(&ctx, &format!("{q} AND decision = 'execute'")).await, 1);
}
