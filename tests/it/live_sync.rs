//! Sync and reconcile on `[provider] kind = "live"`, against Purple Flea's own casino and escrow on the
//! test bed ([`crate::live_bed`]), through the pfsync binary: wallets equal the casino's balances, every
//! ledger entry lands once, a gap of more than the ledger window is recorded and reported, a double payment
//! is found, and an escrow's commission is kept exactly.

use std::process::Output;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, RecordBatch, StringArray};
use pfsync::micros::Micros;
use pfsync::tables::{CommitInfo, ESCROW_ACTIONS, Warehouse, open_or_create, sql_context};
use serde_json::{Value, json};

use crate::common::{PfsyncCommand, count, pfsync, warehouse};
use crate::live_bed::LiveBed;

/// The env variable the config names for the second agent's key.
const AGENT_KEY_ENV: &str = "PFSYNC_TEST_LIVE_AGENT_KEY";

/// A test's world: its warehouse, config file and keys.
struct World {
    /// Holds the warehouse and config file for the test's length.
    _dir: tempfile::TempDir,
    wh: Warehouse,
    config: std::path::PathBuf,
    payer_key: String,
    agent_key: String,
}

impl World {
    fn new(bed: &LiveBed, payer_key: &str, agent_key: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let wh = warehouse(&dir);
        let config = dir.path().join("pfsync.toml");
        let text = format!(
            "warehouse = {:?}\n\n[provider]\nkind = \"live\"\ncasino_url = {:?}\nescrow_url = {:?}\n\n\
             [[provider.agent_keys]]\nenv = \"{AGENT_KEY_ENV}\"\n",
            dir.path().display().to_string(),
            bed.casino_url,
            bed.escrow_url
        );
        std::fs::write(&config, text).unwrap();
        crate::common::init(dir.path());
        World { _dir: dir, wh, config, payer_key: payer_key.into(), agent_key: agent_key.into() }
    }

    /// `pfsync --config ... <args>` with the payer's and the agent's keys.
    fn pfsync(&self, args: &[&str]) -> Output {
        let out = pfsync()
            .config(&self.config)
            .args(args)
            .env("PURPLEFLEA_API_KEY", &self.payer_key)
            .env(AGENT_KEY_ENV, &self.agent_key)
            .output()
            .unwrap();
        println!(
            "pfsync {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn call(method: reqwest::Method, url: &str, key: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(serde_json::to_vec(b).unwrap());
    }
    let a = req.send().await.unwrap();
    let status = a.status().as_u16();
    let text = a.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// `POST /stats/pay` from `key` to `to`; the `pay_` id.
async fn pay(bed: &LiveBed, key: &str, to: &str, amount: f64) -> String {
    let url = format!("{}/stats/pay", bed.casino_url);
    let (status, a) =
        call(reqwest::Method::POST, &url, Some(key), Some(&json!({"to_agent_id": to, "amount": amount}))).await;
    assert_eq!(status, 200, "{a}");
    a["tx_id"].as_str().unwrap().to_string()
}

/// The casino's balance of the key's owner, exact to the micro-dollar.
async fn balance(bed: &LiveBed, key: &str) -> Micros {
    let (status, a) = call(reqwest::Method::GET, &format!("{}/auth/balance", bed.casino_url), Some(key), None).await;
    assert_eq!(status, 200, "{a}");
    Micros::parse(&a["balance_usd"].to_string()).unwrap()
}

/// The ids of the key owner's ledger window.
async fn ledger_ids(bed: &LiveBed, key: &str) -> Vec<String> {
    let (status, a) = call(reqwest::Method::GET, &format!("{}/auth/ledger", bed.casino_url), Some(key), None).await;
    assert_eq!(status, 200, "{a}");
    a["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

/// The balance after the newest entry the key owner's ledger window lists (last in chain order).
async fn newest_listed_balance(bed: &LiveBed, key: &str) -> Micros {
    #[derive(serde::Deserialize)]
    struct Window {
        entries: Vec<pfsync::provider::live::wire::LedgerEntry>,
    }
    let a =
        reqwest::Client::new().get(format!("{}/auth/ledger", bed.casino_url)).bearer_auth(key).send().await.unwrap();
    assert_eq!(a.status().as_u16(), 200);
    // As text: the amounts are read exactly (a `Value` would make floats of them).
    let w: Window = serde_json::from_str(&a.text().await.unwrap()).unwrap();
    pfsync::ledger::chain::chain_order(&w.entries).last().expect("a listed entry").balance_after
}

/// Text cells of a query, one string per row (first column).
async fn texts(wh: &Warehouse, sql: &str) -> Vec<String> {
    let ctx = sql_context(wh).await.unwrap();
    let b = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap();
    let mut out = Vec::new();
    for batch in b {
        let c = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let s = c.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..s.len()).map(|i| s.value(i).to_string()));
    }
    out
}

async fn n(wh: &Warehouse, sql: &str) -> i64 {
    count(&sql_context(wh).await.unwrap(), sql).await
}

/// The wallet balance the table holds for `agent`, back to micro-dollars (written as micros / 10^6).
async fn wallet_balance(wh: &Warehouse, agent: &str) -> Micros {
    let v = texts(
        wh,
        &format!("SELECT CAST(balance_usd AS VARCHAR) FROM purpleflea.agents.wallets WHERE agent_id = '{agent}'"),
    )
    .await;
    assert_eq!(v.len(), 1, "one wallet row for {agent}: {v:?}");
    Micros::from_raw((v[0].parse::<f64>().unwrap() * 1e6).round() as i64).unwrap()
}

#[test]
fn live_sync_wallets_ledgers_once_and_a_gap_of_more_than_the_window() {
    let Some(bed) = crate::live_bed::bed() else { return };
    let agents = bed.agents(3);
    let ((payer, payer_key, _), (held, held_key, _), (other, _, _)) = (&agents[0], &agents[1], &agents[2]);
    bed.fund(payer, 100.0);
    let w = World::new(bed, payer_key, held_key);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        pay(bed, payer_key, held, 1.0).await;
        pay(bed, payer_key, other, 2.0).await;
        let out = w.pfsync(&["sync"]);
        assert!(out.status.success());
        // One wallet per held key, each the casino's balance exactly; the agent whose key is not held has none.
        for (agent, key) in [(payer, payer_key), (held, held_key)] {
            assert_eq!(wallet_balance(&w.wh, agent).await, balance(bed, key).await, "{agent}");
        }
        assert_eq!(n(&w.wh, "SELECT count(*) FROM purpleflea.agents.wallets").await, 2);
        let nulls = "SELECT count(*) FROM purpleflea.agents.wallets WHERE referral_code IS NOT NULL AND \
                     wallet_address IS NULL AND registered_at IS NULL AND total_earned_usd IS NULL";
        assert_eq!(n(&w.wh, nulls).await, 2);

        // Activity between two syncs, both ways.
        pay(bed, payer_key, held, 0.5).await;
        pay(bed, held_key, payer, 0.25).await;
        let out = w.pfsync(&["sync"]);
        assert!(out.status.success());
        assert!(!stdout(&out).contains("ledger gaps"), "{}", stdout(&out));
        // Every entry of both ledgers, once.
        for (agent, key) in [(payer, payer_key), (held, held_key)] {
            let mut want = ledger_ids(bed, key).await;
            want.sort();
            let got = texts(&w.wh, &format!("SELECT entry_id FROM purpleflea.ledger.entries WHERE agent_id = '{agent}' ORDER BY entry_id")).await;
            assert_eq!(got, want, "{agent}");
            assert_eq!(wallet_balance(&w.wh, agent).await, balance(bed, key).await, "{agent}");
        }
        let dupes = "SELECT count(*) FROM (SELECT entry_id FROM purpleflea.ledger.entries GROUP BY entry_id HAVING count(*) > 1)";
        assert_eq!(n(&w.wh, dupes).await, 0);
        let synced = n(&w.wh, "SELECT count(*) FROM purpleflea.ledger.entries").await;
        println!("entries synced after two syncs: {synced}");

        // More than the window between two syncs: 55 payments from the payer, all after the second of the
        // newest stored entry (so it cannot come back in the window as a tie of its second). Among the entries
        // of one second the casino lists the earliest written first: a second with more than 50 keeps its
        // newest entries out of every window, and the wallet then rightly disagrees with the newest synced
        // entry (balance_mismatch). An idle machine makes 55 payments in under a second, so the last 5 go in
        // a second of their own: the newest entries are listed, whatever the speed.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        for _ in 0..50 {
            pay(bed, payer_key, other, 0.01).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        for _ in 0..5 {
            pay(bed, payer_key, other, 0.01).await;
        }
        assert_eq!(newest_listed_balance(bed, payer_key).await, balance(bed, payer_key).await, "the newest are listed");
        let out = w.pfsync(&["sync"]);
        assert!(out.status.success());
        // The window is the newest 50 by whole second: where it cuts through a second it may also skip
        // some of that second's entries, each hole one more gap.
        let gaps = texts(&w.wh, "SELECT concat(agent_id, ' ', kind) FROM purpleflea.ledger.gaps ORDER BY kind DESC").await;
        println!("gaps found: {gaps:?}");
        assert!(stdout(&out).contains(&format!("ledger gaps {}", gaps.len())), "{}", stdout(&out));
        assert_eq!(gaps[0], format!("{payer} window_full"));
        assert!(gaps.iter().all(|g| g.starts_with(payer.as_str())), "{gaps:?}");
        assert_eq!(n(&w.wh, dupes).await, 0);
        println!("entries synced after three syncs: {}", n(&w.wh, "SELECT count(*) FROM purpleflea.ledger.entries").await);

        // Reconcile reports it, and the wallet still agrees with the newest entry (no balance finding).
        let out = w.pfsync(&["reconcile"]);
        assert_eq!(out.status.code(), Some(8), "findings open");
        let classes = texts(
            &w.wh,
            "SELECT concat(class, ' ', agent_id) FROM purpleflea.payouts.reconciliation WHERE resolved_at IS NULL",
        )
        .await;
        assert_eq!(classes, vec![format!("ledger_gap {payer}"); gaps.len()], "one finding per gap");
    });
}

/// Escrow actions: a create by the payer (buyer) for `seller`, and its release.
async fn write_escrow_actions(wh: &Warehouse, buyer: &str, seller: &str, amount: &str) {
    let commit = CommitInfo { run_id: "upstream".into(), step: "test" };
    let table = open_or_create(wh, &ESCROW_ACTIONS, &commit).await.unwrap();
    let t = |v: [Option<&str>; 2]| -> ArrayRef { Arc::new(v.into_iter().collect::<StringArray>()) };
    let cents = pfsync::money::Usd::parse(amount).unwrap().to_decimal128();
    let columns: Vec<ArrayRef> = vec![
        t([Some("le-create"), Some("le-release")]),
        t([Some("create"), Some("release")]),
        t([None, None]),
        t([None, Some("le-create")]),
        t([Some(buyer), None]),
        t([Some(seller), None]),
        Arc::new(Decimal128Array::from(vec![Some(cents), None]).with_precision_and_scale(18, 2).unwrap()),
        t([Some("Data labeling task"), None]),
        t([None, None]),
        t([Some("task"), Some("done")]),
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![None, None]).with_timezone("UTC")),
        t([Some("tests"), Some("tests")]),
    ];
    table.write(vec![RecordBatch::try_new(ESCROW_ACTIONS.arrow_schema(), columns).unwrap()]).await.unwrap();
}

/// The in-flight timeout of [`settle_payouts`]'s runs: twice their send budget (3 s timeout + 3 s retries),
/// the shortest it may be.
const IN_FLIGHT_SECS: u64 = 12;

/// `pfsync payouts` until `want` operations are completed, each run exiting 0 or 6, at most five runs.
/// A release waits for its create's escrow: the run after the create's sends it. An exit 6 is an outcome
/// left unknown: on a loaded machine the services' shared SQLite refuses a write for real ("database is
/// locked", a 500 that says nothing of whether money moved; in `escrow.log`/`casino.log`), or a send
/// outlasts its timeout. The engine's answer is a rerun past the in-flight timeout, which looks the outcome
/// up in the ledger and sends again only if nothing moved; the checks after this (no unlogged debit, the
/// exact commission) then show that nothing was paid or locked twice.
async fn settle_payouts(w: &World, want: i64) {
    let completed = "SELECT count(*) FROM purpleflea.payouts.status WHERE status = 'completed'";
    let budget = ["--timeout-secs", "3", "--max-elapsed-secs", "3"];
    let in_flight = IN_FLIGHT_SECS.to_string();
    let args: Vec<&str> = budget.into_iter().chain(["payouts", "--in-flight-timeout", in_flight.as_str()]).collect();
    for run in 1..=5 {
        let out = w.pfsync(&args);
        let done = n(&w.wh, completed).await;
        if done == want {
            assert_eq!(out.status.code(), Some(0), "the run that completes the last operation ends clean");
            return;
        }
        assert!(done < want, "{done} completed, want {want}");
        match out.status.code() {
            Some(0) => {}
            Some(6) => tokio::time::sleep(std::time::Duration::from_millis(IN_FLIGHT_SECS * 1000 + 300)).await,
            other => panic!("payouts run {run}: exit {other:?}"),
        }
    }
    panic!("{want} operations not completed in five runs: {}", n(&w.wh, completed).await);
}

#[test]
fn live_reconcile_finds_a_double_payment_and_keeps_the_escrow_commission_exact() {
    let Some(bed) = crate::live_bed::bed() else { return };
    let agents = bed.agents(2);
    let ((payer, payer_key, _), (payee, payee_key, _)) = (&agents[0], &agents[1]);
    bed.fund(payer, 100.0);
    let w = World::new(bed, payer_key, payee_key);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        crate::payouts::write_pending(&w.wh, &[("lp-1", payee, "1.50", "r"), ("lp-2", payee, "2.00", "r")]).await;
        write_escrow_actions(&w.wh, payer, payee, "12.34").await;
        settle_payouts(&w, 4).await;

        let report = w._dir.path().join("live-report.html");
        let out = w.pfsync(&["reconcile", "--report", report.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "nothing to find yet");
        // The daily totals and the report's chart come from the ledger copy: the payer's two payments and its
        // escrow lock, all matched. The release credit (12.2166: the amount less the commission) is not
        // whole cents, so the cents table leaves it out rather than round it.
        let totals = texts(
            &w.wh,
            "SELECT concat(kind, ' ', CAST(sum(transactions) AS VARCHAR), ' ', CAST(sum(amount_usd) AS VARCHAR), ' ', \
             CAST(sum(matched_usd) AS VARCHAR)) FROM purpleflea.ops.daily_totals GROUP BY kind ORDER BY kind",
        )
        .await;
        assert_eq!(totals, ["escrow_lock 1 12.34 12.34", "payout 2 3.50 3.50"]);
        let html = std::fs::read_to_string(&report).unwrap();
        assert!(html.contains("id=\"own-payouts-chart\""), "the chart is drawn");
        assert!(
            html.contains(r#"<td>payout</td><td class="num">2</td><td class="num">3.50</td><td class="num">2</td><td class="num">3.50</td>"#),
            "pfsync's two payouts, both matched: {html}"
        );
        // The commission exactly: 12.34 -> 0.1234, and 12.2166 to the counterparty.
        let exact = "SELECT count(*) FROM purpleflea.agents.escrow_terms WHERE status = 'released' AND \
                     amount_usd = CAST('12.34' AS DECIMAL(18,6)) AND commission_usd = CAST('0.1234' AS DECIMAL(18,6)) \
                     AND net_to_counterparty_usd = CAST('12.2166' AS DECIMAL(18,6))";
        assert_eq!(n(&w.wh, exact).await, 1);
        let seed_row = format!(
            "SELECT count(*) FROM purpleflea.agents.escrows WHERE status = 'released' AND buyer_agent_id = '{payer}' \
             AND seller_agent_id = '{payee}' AND amount_usd = CAST('12.34' AS DECIMAL(18,2)) AND tx_id LIKE '%_release'"
        );
        assert_eq!(n(&w.wh, &seed_row).await, 1);
        let credit = format!(
            "SELECT count(*) FROM purpleflea.ledger.entries WHERE agent_id = '{payee}' AND reason LIKE 'escrow_release:%' \
             AND amount_usd = CAST('12.2166' AS DECIMAL(18,6))"
        );
        assert_eq!(n(&w.wh, &credit).await, 1);

        // A double payment outside pfsync: the payer pays the payee lp-1's amount again.
        let twin = pay(bed, payer_key, payee, 1.5).await;
        let out = w.pfsync(&["reconcile"]);
        assert_eq!(out.status.code(), Some(8), "a finding is open");
        let open = texts(
            &w.wh,
            "SELECT concat(class, ' ', tx_ids, ' ', detail) FROM purpleflea.payouts.reconciliation WHERE resolved_at IS NULL \
             AND run_id = (SELECT max(run_id) FROM purpleflea.payouts.reconciliation)",
        )
        .await;
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(open[0].starts_with(&format!("unlogged_at_provider {twin} ")), "{open:?}");
        assert!(open[0].contains("lp-1"), "the detail names the logged payout it repeats: {open:?}");
    });
}
