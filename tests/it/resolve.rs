//! `pfsync resolve`: what waits for a person is listed with the provider's evidence, and a person's decision
//! is checked, recorded with who and why, and honoured by the next `pfsync payouts` (a provider that keeps no
//! idempotency keys, so an unknown outcome can only be settled by a person).

use std::process::{Command, Output, Stdio};

use pfsync::provider::records::TxKind;
use pfsync::sandbox::{Fault, Sandbox, SandboxConfig};

use crate::common::{Later, PaidBy, PfsyncCommand, count, paid_per, pfsync, text, warehouse};
use crate::payouts::write_pending;

/// What the test's pfsync commands share: the sandbox, the warehouse, the declaration that the provider
/// keeps no keys, and a clock the test can move.
struct Bench {
    sb: Sandbox,
    dir: tempfile::TempDir,
    later: Later,
}

impl Bench {
    async fn new() -> Bench {
        let mut cfg = SandboxConfig::for_tests(20);
        cfg.ignore_idempotency_keys = true;
        let sb = Sandbox::start(cfg).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pfsync.toml"), "[provider]\nhonours_idempotency_keys = false\n").unwrap();
        Bench { sb, dir, later: Later::default() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = pfsync();
        c.sandbox(&self.sb)
            .client_budget(1, 1)
            .config(self.dir.path().join("pfsync.toml"))
            .warehouse(self.dir.path())
            .later(&self.later)
            .arg("-q")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = tokio::task::block_in_place(|| self.cmd(args).output().unwrap());
        eprintln!("pfsync {}: exit {:?}\n{}", args.join(" "), out.status.code(), text(&out));
        out
    }

    fn payouts(&self) -> Option<i32> {
        self.run(&["payouts", "--in-flight-timeout", "4"]).status.code()
    }

    /// The sandbox's transaction whose reference (a test payout's reason) is `reason`.
    fn tx_of(&self, reason: &str) -> String {
        let l = self.sb.ledger();
        let mut t = l.transactions().filter(|t| t.reference.as_deref() == Some(reason));
        let tx = t.next().unwrap_or_else(|| panic!("no transaction for {reason}")).tx_id.clone();
        assert!(t.next().is_none(), "{reason} paid once");
        tx
    }

    fn paid(&self, reason: &str) -> usize {
        paid_per(&self.sb, PaidBy::Reference).get(reason).copied().unwrap_or(0)
    }
}

fn decide(b: &Bench, id: &str, decision: &[&str], by: &str) -> Output {
    let mut args = vec!["resolve", id];
    args.extend_from_slice(decision);
    args.extend_from_slice(&["--by", by, "--note", "checked at the provider", "--in-flight-timeout", "4"]);
    b.run(&args)
}

/// Each decision is recorded with who and why and honoured by the next run: `completed` is never sent again
/// and reconcile shows it matched with the person's name, `never-ran` is paid once, `abandoned` never; a
/// reference that does not exist, does not fit (amount, payee, kind) or is another operation's is refused
/// with exit 2 and nothing recorded, as is a decision on a final operation or one whose intent may still be
/// being sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_decisions_are_checked_recorded_and_honoured_by_the_next_run() {
    let b = Bench::new().await;
    let wh = warehouse(&b.dir);
    // Paid normally: their transactions are what the refusals below name.
    write_pending(
        &wh,
        &[
            ("done-1", "agent-000006", "2.50", "r-done-1"),
            ("done-2", "agent-000003", "9.99", "r-done-2"),
            ("done-3", "agent-000003", "2.50", "r-done-3"),
        ],
    )
    .await;
    assert_eq!(b.payouts(), Some(0));
    // Paid at the provider, answered 500: unknown, and a provider without keys cannot say more.
    write_pending(&wh, &[("u-1", "agent-000003", "2.50", "r-u-1")]).await;
    b.sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
    assert_eq!(b.payouts(), Some(6));
    // Answered 500 before anything ran: unknown as well, though nothing moved.
    write_pending(&wh, &[("n-1", "agent-000004", "3.00", "r-n-1"), ("a-1", "agent-000005", "3.00", "r-a-1")]).await;
    b.sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorBefore), None);
    b.sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorBefore), None);
    assert_eq!(b.payouts(), Some(6));
    assert_eq!((b.paid("r-u-1"), b.paid("r-n-1"), b.paid("r-a-1")), (1, 0, 0));
    let faucet = {
        let mut l = b.sb.ledger();
        l.faucet_claim("agent-000003", None).unwrap();
        l.transactions().find(|t| t.kind == TxKind::Faucet).unwrap().tx_id.clone()
    };
    assert_eq!(b.run(&["sync", "transactions"]).status.code(), Some(0));

    // The list: the three unknowns, with their evidence; nothing that is final.
    let out = b.run(&["resolve"]);
    assert_eq!(out.status.code(), Some(0));
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.starts_with("3 operation(s) need a person"), "{list}");
    for id in ["u-1 payout unknown", "n-1 payout unknown", "a-1 payout unknown"] {
        assert!(list.contains(id), "{id}: {list}");
    }
    assert!(!list.contains("done-1 payout"), "{list}");
    let (u1, done1, done2, done3) = (b.tx_of("r-u-1"), b.tx_of("r-done-1"), b.tx_of("r-done-2"), b.tx_of("r-done-3"));
    assert!(list.contains(&format!("candidate {u1} payout 2.50")) && list.contains(&format!("{u1} payout")), "{list}");
    assert!(list.contains(&format!("candidate {done3} payout 2.50")) && list.contains("claimed by done-3"), "{list}");

    // Refusals: exit 2, a message that says why, nothing recorded.
    let refusals: [(&[&str], &str); 7] = [
        (&["completed", "--tx", "tx_does_not_exist"], "is not in"),
        (&["completed", "--tx", &done2], "amount is 9.99"),
        (&["completed", "--tx", &done1], "agent-000006"),
        (&["completed", "--tx", &faucet], "faucet"),
        (&["completed", "--tx", &done3], "already the outcome of operation done-3"),
        (&["completed"], "--tx is required"),
        (&["never-ran", "--tx", &u1], "--tx goes with `completed` only"),
    ];
    for (decision, why) in refusals {
        let out = decide(&b, "u-1", decision, "alice");
        assert_eq!(out.status.code(), Some(2), "{decision:?}");
        assert!(text(&out).contains(why), "{decision:?}: {why}: {}", text(&out));
    }
    let out = b.run(&["resolve", "u-1", "abandoned", "--note", "no one says who"]);
    assert_eq!(out.status.code(), Some(2), "--by is required");
    let out = b.run(&["resolve", "u-1", "abandoned", "--by", "eve", "--note", "forged\nline"]);
    assert!(out.status.code() == Some(2) && text(&out).contains("no control character"), "{}", text(&out));
    let out = decide(&b, "done-1", &["abandoned"], "alice");
    assert!(out.status.code() == Some(2) && text(&out).contains("already final (completed)"), "{}", text(&out));
    let out = decide(&b, "nobody", &["abandoned"], "alice");
    assert!(out.status.code() == Some(2) && text(&out).contains("not in the payout log"), "{}", text(&out));
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    assert_eq!(count(&ctx, "SELECT count(*) FROM purpleflea.payouts.log WHERE decided_by IS NOT NULL").await, 0);

    // The decisions.
    assert_eq!(decide(&b, "u-1", &["completed", "--tx", &u1], "alice").status.code(), Some(0));
    assert_eq!(decide(&b, "n-1", &["never-ran"], "bob").status.code(), Some(0));
    assert_eq!(decide(&b, "a-1", &["abandoned"], "carol").status.code(), Some(0));
    let again = decide(&b, "n-1", &["never-ran"], "bob");
    assert!(again.status.code() == Some(2) && text(&again).contains("already recorded as never ran"));
    let out = b.run(&["resolve"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 operation(s) need a person"), "{}", text(&out));

    // Honoured: n-1 paid once, u-1 not again, a-1 never.
    assert_eq!(b.payouts(), Some(0));
    assert_eq!(b.payouts(), Some(0));
    assert_eq!((b.paid("r-u-1"), b.paid("r-n-1"), b.paid("r-a-1")), (1, 1, 0));
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let status = |id: &str, want: &str| {
        format!("SELECT count(*) FROM purpleflea.payouts.status WHERE operation_id = '{id}' AND {want}")
    };
    assert_eq!(count(&ctx, &status("u-1", &format!("status = 'completed' AND tx_id = '{u1}' AND decided_by = 'alice' AND note = 'checked at the provider'"))).await, 1);
    assert_eq!(count(&ctx, &status("n-1", "status = 'completed' AND attempts = 2 AND decided_by = 'bob'")).await, 1);
    assert_eq!(
        count(&ctx, &status("a-1", "status = 'abandoned' AND decided_by = 'carol' AND decided_at IS NOT NULL")).await,
        1
    );

    // Reconcile shows each decision as a person's, with the class it is in.
    let out = b.run(&["reconcile"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("decided by a person: 3"), "{report}");
    assert!(
        report.contains(&format!("u-1 payout completed (tx {u1}) by alice")) && report.contains("[matched]"),
        "{report}"
    );
    assert!(report.contains("a-1 payout abandoned by carol"), "{report}");
    assert!(report.contains("n-1 payout never_ran by bob"), "{report}");
}

/// An intent whose run may still be sending is nobody's to decide until the in-flight timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_decision_is_taken_on_an_intent_that_may_still_be_sent() {
    let b = Bench::new().await;
    write_pending(&warehouse(&b.dir), &[("f-1", "agent-000002", "1.25", "r-f-1")]).await;
    let mut c = b.cmd(&["payouts", "--in-flight-timeout", "4"]);
    c.env("PFSYNC_CRASH_AT", "after_intents");
    assert_eq!(tokio::task::block_in_place(|| c.status().unwrap()).code(), None, "killed after its intents");
    let out = decide(&b, "f-1", &["abandoned"], "dave");
    assert!(out.status.code() == Some(2) && text(&out).contains("may still be sending it"), "{}", text(&out));
    let out = b.run(&["resolve", "--in-flight-timeout", "4"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 operation(s)"), "not yet for a person");
    b.later.pass(5);
    let out = b.run(&["resolve", "--in-flight-timeout", "4"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.starts_with("1 operation(s)") && list.contains("f-1 payout in_flight"), "{list}");
    assert!(list.contains("the run that sent it stopped"), "{list}");
    assert_eq!(decide(&b, "f-1", &["abandoned"], "dave").status.code(), Some(0));
    assert_eq!(b.payouts(), Some(0));
    assert_eq!(b.paid("r-f-1"), 0, "abandoned: never sent");
}

/// One event of a payout `id`, recorded an hour ago by run `run-a`.
fn event(id: &str, event: pfsync::payouts::event::Event, attempt: i32) -> pfsync::payouts::log::LogEvent {
    use pfsync::payouts::event::Event;
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    pfsync::payouts::log::LogEvent {
        agent_id: Some("agent-000001".into()),
        amount_usd: Some(crate::common::usd("1.00")),
        reason: Some(format!("r-{id}")),
        tx_id: (event == Event::Completed).then(|| format!("tx-{id}")),
        error_code: (event == Event::Unknown).then(|| "transport".into()),
        ..pfsync::payouts::log::LogEvent::new(
            id,
            pfsync::operation::OpKind::Payout,
            event,
            attempt,
            format!("pfsync:default:payout:{id}"),
            "run-a",
            at,
        )
    }
}

/// A decision is committed on the log version it was checked at. A commit that lands in between (a payouts
/// run) makes it check again: an outcome of another operation changes nothing and the decision is
/// recorded; an outcome of the same operation refuses it, and nothing of the person's is recorded.
#[tokio::test]
async fn a_decision_checked_before_a_concurrent_outcome_of_its_operation_is_refused() {
    use pfsync::app::AppError;
    use pfsync::app::resolve::{Ask, commit_prepared, prepare};
    use pfsync::payouts::event::Event::{Completed, Intent, Unknown};
    use pfsync::payouts::log::append_events;
    use pfsync::payouts::resolve::{Decision, Refusal};
    use pfsync::tables::{CommitInfo, PAYOUT_LOG, open_existing, open_or_create};

    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let run = CommitInfo { run_id: "run-a".into(), step: "payouts" };
    let table = open_or_create(&wh, &PAYOUT_LOG, &run).await.unwrap();
    let unknown: Vec<_> =
        ["c-1", "c-2", "c-3"].iter().flat_map(|id| [event(id, Intent, 1), event(id, Unknown, 1)]).collect();
    append_events(table, &unknown, &run).await.unwrap();
    let land = |id: &'static str| {
        let (wh, run) = (&wh, &run);
        async move {
            let t = open_existing(wh, &PAYOUT_LOG).await.unwrap().unwrap();
            append_events(t, &[event(id, Completed, 1)], run).await.unwrap();
        }
    };
    let person = CommitInfo { run_id: "resolve-run".into(), step: "resolve" };
    let now = chrono::Utc::now();
    let ask = |id: &'static str, decision: &'static Decision| Ask {
        id,
        decision,
        by: "erin",
        note: "checked",
        in_flight_timeout: chrono::Duration::seconds(900),
    };

    static NEVER_RAN: Decision = Decision::NeverRan;
    let p = prepare(&wh, "resolve-run", &ask("c-1", &NEVER_RAN), now, None).await.unwrap();
    land("c-2").await;
    let seen = commit_prepared(p, &person).await.unwrap().expect_err("another commit took the version");
    let p = prepare(&wh, "resolve-run", &ask("c-1", &NEVER_RAN), now, Some(&seen)).await.unwrap();
    let recorded = commit_prepared(p, &person).await.unwrap().expect("c-1 did not change: recorded");
    assert_eq!((recorded.decided_by.as_deref(), recorded.attempt), (Some("erin"), 1));

    static ABANDONED: Decision = Decision::Abandoned;
    let p = prepare(&wh, "resolve-run", &ask("c-3", &ABANDONED), now, None).await.unwrap();
    land("c-3").await;
    let seen = commit_prepared(p, &person).await.unwrap().expect_err("another commit took the version");
    match prepare(&wh, "resolve-run", &ask("c-3", &ABANDONED), now, Some(&seen)).await {
        Err(AppError::Refused(Refusal::Changed { id, what })) => {
            assert_eq!((id.as_str(), what.as_str()), ("c-3", "completed of attempt 1"))
        }
        other => panic!("c-3 changed meanwhile: {:?}", other.map(|p| p.event)),
    }
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let decided = "SELECT count(*) FROM purpleflea.payouts.log WHERE decided_by IS NOT NULL";
    assert_eq!(count(&ctx, decided).await, 1, "only c-1's decision");
}

/// A provider that keeps no keys records every payout as a keyless transaction: the transaction a payout's
/// log names as its outcome is that payout, never "a likely second payment" of it, in a run that reads what
/// changed and in a rebuild alike; a keyless payment made besides it, by hand, still is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_providers_own_payouts_are_matched_and_only_a_payment_besides_them_is_a_repeat() {
    use pfsync::provider::seed::wire::PayoutRequest;
    let b = Bench::new().await;
    let wh = warehouse(&b.dir);
    write_pending(&wh, &[("k-1", "agent-000006", "2.50", "r-k-1"), ("k-2", "agent-000003", "1.00", "r-k-2")]).await;
    assert_eq!(b.payouts(), Some(0));
    for args in [&["reconcile"][..], &["reconcile", "--full"]] {
        let out = b.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains("unattributed_payout"), "{args:?}: {}", text(&out));
    }
    // Paid again by hand (same agent, amount and reason, no key): that one is a repeat, in both runs.
    let amount = pfsync::money::Usd::parse("2.50").unwrap();
    let req = PayoutRequest { agent_id: "agent-000006".into(), amount_usd: amount, reason: "r-k-1".into() };
    crate::common::client(&b.sb).payout(&req, None).await.unwrap();
    for args in [&["reconcile"][..], &["reconcile", "--full"]] {
        let out = b.run(args);
        assert_eq!(out.status.code(), Some(8), "{args:?}: {}", text(&out));
        let unattributed = text(&out).lines().filter(|l| l.contains("- unattributed_payout k-1")).count();
        assert_eq!(unattributed, 1, "{args:?}: {}", text(&out));
    }
}
