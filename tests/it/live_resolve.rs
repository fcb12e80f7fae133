//! `pfsync resolve` against Purple Flea's own services (the test bed, [`crate::live_bed`]): a payout the
//! payer's ledger cannot settle (two unclaimed debits of its amount since the intent) is listed with both,
//! a reference that is not its own is refused, the right one recorded and honoured; and operations whose
//! run died before sending are abandoned or sent again on a person's word.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{PfsyncCommand, pfsync, text};
use crate::live_bed::{LiveBed, bed};
use crate::live_payouts::get;
use crate::payouts::write_pending;

/// The client budget (timeout and retries, seconds each), and the in-flight timeout it allows.
const BUDGET_SECS: u64 = 3;
const IN_FLIGHT_SECS: u64 = 4 * BUDGET_SECS;

struct World {
    bed: &'static LiveBed,
    payer: (String, String),
    /// Agents whose keys pfsync holds besides the payer's.
    held: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl World {
    fn warehouse(&self) -> pfsync::tables::Warehouse {
        crate::common::warehouse(&self.dir)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let keys: String =
            (1..=self.held.len()).map(|i| format!("[[provider.agent_keys]]\nenv = \"PF_KEY_{i}\"\n")).collect();
        let config = self.dir.path().join("pfsync.toml");
        let text = format!(
            "[provider]\nkind = \"live\"\ncasino_url = \"{}\"\nescrow_url = \"{}\"\nclock_skew_secs = 2\n{keys}",
            self.bed.casino_url, self.bed.escrow_url
        );
        std::fs::write(&config, text).unwrap();
        let mut c = pfsync();
        c.config(&config)
            .warehouse(self.dir.path())
            .client_budget(BUDGET_SECS, BUDGET_SECS)
            .arg("-q")
            .args(args)
            .env("PURPLEFLEA_API_KEY", &self.payer.1)
            .stdin(Stdio::null());
        for (i, (_, key)) in self.held.iter().enumerate() {
            c.env(format!("PF_KEY_{}", i + 1), key);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        eprintln!("pfsync {}: exit {:?}\n{}", args.join(" "), out.status.code(), text(&out));
        out
    }

    fn payouts(&self, crash_at: Option<&str>) -> Option<i32> {
        let in_flight = IN_FLIGHT_SECS.to_string();
        let mut c = self.cmd(&["payouts", "--in-flight-timeout", &in_flight]);
        if let Some(p) = crash_at {
            c.env("PFSYNC_CRASH_AT", p);
        }
        let out = c.output().unwrap();
        eprintln!("payouts (crash at {crash_at:?}): exit {:?}\n{}", out.status.code(), text(&out));
        out.status.code()
    }

    fn decide(&self, id: &str, decision: &[&str], by: &str) -> Output {
        let in_flight = IN_FLIGHT_SECS.to_string();
        let mut args = vec!["resolve", id];
        args.extend_from_slice(decision);
        args.extend_from_slice(&["--by", by, "--note", "read the casino's ledger", "--in-flight-timeout", &in_flight]);
        self.run(&args)
    }

    /// The payer's `payment_sent` debits at the casino: reference -> (amount, created_at).
    async fn payments_sent(&self) -> HashMap<String, String> {
        let l = get(&format!("{}/auth/ledger", self.bed.casino_url), Some(&self.payer.1)).await;
        l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "payment_sent")
            .map(|e| (e["reference"].as_str().unwrap().to_string(), e["amount"].to_string()))
            .collect()
    }

    /// Pay `amount` from the payer to `to` outside pfsync; the payment's reference.
    async fn pay_outside(&self, to: &str, amount: f64) -> String {
        let before = self.payments_sent().await;
        let resp = reqwest::Client::new()
            .post(format!("{}/stats/pay", self.bed.casino_url))
            .bearer_auth(&self.payer.1)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "to_agent_id": to, "amount": amount }).to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let after = self.payments_sent().await;
        after.into_keys().find(|r| !before.contains_key(r)).expect("the outside payment's reference")
    }
}

fn wait_out_in_flight() {
    std::thread::sleep(Duration::from_millis(IN_FLIGHT_SECS * 1000 + 300));
}

/// A payout paid by a run killed before it logged the outcome, with the payer paying the same amount
/// outside pfsync meanwhile: the ledger holds two unclaimed debits of it, so it waits for a person.
/// `pfsync resolve` lists both; a payment to someone else, of another amount, a credit, one that does not
/// exist, or one another operation claims is refused (exit 2); the right one is recorded with the person's
/// name, the next run sends nothing, and reconcile shows it matched as the person's decision. Two payouts
/// whose run died after their intents are abandoned (never sent) and found never ran (paid once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_settles_what_the_payers_ledger_cannot_and_the_next_run_honours_it() {
    let Some(bed) = bed() else { return };
    let (pid, pkey, _) = bed.agents(1).remove(0);
    bed.fund(&pid, 60.0);
    let mut others = bed.agents(4).into_iter().map(|(id, key, _)| (id, key));
    let (payee, other, b, c) =
        (others.next().unwrap(), others.next().unwrap(), others.next().unwrap(), others.next().unwrap());
    // The payee's key is not held (its credit proves nothing either way); the other's is.
    let w = World { bed, payer: (pid, pkey), held: vec![other.clone()], dir: tempfile::tempdir().unwrap() };
    let wh = w.warehouse();

    write_pending(&wh, &[("h-0", payee.0.as_str(), "3.33", "paid before")]).await;
    assert_eq!(w.payouts(None), Some(0));
    write_pending(&wh, &[("h-1", payee.0.as_str(), "3.33", "the payout in question")]).await;
    assert_eq!(w.payouts(Some("after_send")), None, "killed after the send");
    let outside = w.pay_outside(&other.0, 3.33).await;
    let smaller = w.pay_outside(&other.0, 1.11).await;
    wait_out_in_flight();
    assert_eq!(w.payouts(None), Some(6), "unknown, for a person");
    let sent = w.payments_sent().await;
    assert_eq!(sent.len(), 4, "h-0, h-1 and two outside: {sent:?}");
    assert_eq!(w.run(&["sync", "transactions"]).status.code(), Some(0));

    let out = w.run(&["resolve"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.starts_with("1 operation(s) need a person") && list.contains("h-1 payout unknown"), "{list}");
    // The candidate lines: "candidate REF payment_sent AMOUNT at TIME [to PAYEE] unclaimed|claimed by OP".
    let candidate = |tail: &str| -> Vec<String> {
        list.lines()
            .filter(|l| l.trim_start().starts_with("candidate ") && l.ends_with(tail))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect()
    };
    let h0 = candidate("claimed by h-0");
    let unclaimed = candidate("unclaimed");
    assert_eq!((h0.len(), unclaimed.len()), (1, 2), "{list}");
    assert!(unclaimed.contains(&outside), "{list}");
    assert!(list.contains(&format!("to {} unclaimed", other.0)), "the other's credit is held: {list}");
    let (h0, h1) = (h0[0].clone(), unclaimed.into_iter().find(|r| *r != outside).unwrap());
    assert!(sent.contains_key(&h0) && sent.contains_key(&h1) && !list.contains(&smaller), "{list}");

    let deposit = {
        let l = get(&format!("{}/auth/ledger", bed.casino_url), Some(&w.payer.1)).await;
        let credit = l["entries"].as_array().unwrap().iter().find(|e| e["type"] == "credit").cloned().unwrap();
        credit["id"].as_str().unwrap().to_string()
    };
    for (tx, why) in [
        (outside.as_str(), format!("it paid {}", other.0)),
        (smaller.as_str(), "its amount is 1.11".to_string()),
        (deposit.as_str(), "credit".to_string()),
        ("pay_does_not_exist", "is not in the payer's ledger copy".to_string()),
        (h0.as_str(), "already the outcome of operation h-0".to_string()),
    ] {
        let out = w.decide("h-1", &["completed", "--tx", tx], "alice");
        assert_eq!(out.status.code(), Some(2), "{tx}");
        assert!(text(&out).contains(&why), "{tx}: {why}: {}", text(&out));
    }
    assert_eq!(w.decide("h-1", &["completed", "--tx", &h1], "alice").status.code(), Some(0));
    assert_eq!(w.payouts(None), Some(0));
    assert_eq!(w.payments_sent().await.len(), 4, "nothing sent again");
    let out = w.run(&["reconcile", "--stale-after-secs", "0"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains(&format!("h-1 payout completed (tx {h1}) by alice")), "{report}");
    assert!(report.contains("read the casino's ledger [matched]"), "{report}");

    // Runs that died after their intents: nothing was sent.
    write_pending(&wh, &[("h-2", b.0.as_str(), "4.44", "to abandon"), ("h-3", c.0.as_str(), "5.55", "to send again")])
        .await;
    assert_eq!(w.payouts(Some("after_intents")), None, "killed after the intents");
    let out = w.decide("h-2", &["abandoned"], "bob");
    assert!(out.status.code() == Some(2) && text(&out).contains("may still be sending it"), "{}", text(&out));
    wait_out_in_flight();
    assert_eq!(w.decide("h-2", &["abandoned"], "bob").status.code(), Some(0));
    assert_eq!(w.decide("h-3", &["never-ran"], "bob").status.code(), Some(0));
    assert_eq!(w.payouts(None), Some(0));
    assert_eq!(w.payouts(None), Some(0));
    let sent: Vec<String> = w.payments_sent().await.into_values().collect();
    assert_eq!(sent.len(), 5, "h-3 paid once, h-2 never: {sent:?}");
    assert_eq!(sent.iter().filter(|a| a.as_str() == "5.55").count(), 1, "{sent:?}");
    assert!(!sent.iter().any(|a| a.as_str() == "4.44"), "{sent:?}");
}
