//! The exactly-once promise against providers that do not help: lookups that garble or ignore their
//! filter, a provider that forgets keys at once, one that ignores them, and runs that overlap.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use pfsync::http::{Repeat, RetryPolicy};
use pfsync::payouts::{PayoutOptions, PayoutReport};
use pfsync::provider::seed::{SeedClient, SeedProvider};
use pfsync::sandbox::{Fault, LookupFault, Sandbox, SandboxConfig};
use pfsync::tables::Warehouse;

use crate::common::{PaidBy, assert_paid_once, client_config, count, paid_per, pay_with, wait_until, warehouse};
use crate::payouts::{as_refs, n_payouts, payouts_cmd, write_pending};

/// Each test payout has its own reason, which the sandbox keeps as the reference: what the oracle counts
/// (transactions per reference must be 1), whatever the provider does with keys.
fn references(rows: &[(String, String, String, String)]) -> Vec<&str> {
    rows.iter().map(|r| r.3.as_str()).collect()
}

async fn pay(provider: &SeedProvider, wh: &Warehouse) -> PayoutReport {
    pay_with(provider, wh, &PayoutOptions::default()).await.expect("payouts run")
}

/// A client that sends each request once: what is under test is the engine's resolution, not retries.
fn one_shot(sb: &Sandbox, keys_honoured: bool) -> SeedClient {
    let mut cfg = client_config(sb);
    cfg.retry = RetryPolicy { max_attempts: 1, ..cfg.retry };
    let repeat = SeedProvider::capabilities_for(keys_honoured).repeat();
    SeedClient::new(cfg, sb.base_url(), repeat).expect("client")
}

/// The provider commits every payout and answers 500; it keeps no key past the request (retention 0),
/// so any second POST of these operations, now or days later, would be a second payment. Lookups then
/// come back garbled, or unfiltered: over several reruns nothing is sent again and nothing is recorded
/// from another operation's transaction. Once lookups answer properly, each resolves to its own.
#[tokio::test]
async fn unreadable_or_unfiltered_lookups_leave_operations_unknown_and_never_pay_twice() {
    for fault in [LookupFault::Garble, LookupFault::IgnoreFilter] {
        let mut cfg = SandboxConfig::for_tests(20);
        cfg.idempotency_retention = Duration::ZERO;
        let sb = Sandbox::start(cfg).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wh = warehouse(&dir);
        let rows = n_payouts(10, "u");
        write_pending(&wh, &as_refs(&rows)).await;
        for _ in 0..rows.len() {
            sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
        }
        let provider = SeedProvider::new(one_shot(&sb, true), true);
        let r = pay(&provider, &wh).await;
        assert_eq!((r.completed, r.unknown), (0, 10), "{r}");
        assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "the first run");

        sb.set_lookup_fault(Some(fault));
        let executed = sb.stats().executed;
        for rerun in 1..=3 {
            let r = pay(&provider, &wh).await;
            assert_eq!((r.completed, r.unknown, r.needs_person), (0, 10, 10), "{fault:?} rerun {rerun}: {r}");
            assert_eq!(sb.stats().executed, executed, "{fault:?} rerun {rerun}: no POST after an inconclusive lookup");
            assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "inconclusive lookups");
        }
        let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
        let why = "SELECT count(*) FROM purpleflea.payouts.log WHERE error_code = 'lookup_inconclusive'";
        assert_eq!(count(&ctx, why).await, 30, "each inconclusive lookup is logged with its reason");

        sb.set_lookup_fault(None);
        let r = pay(&provider, &wh).await;
        assert_eq!((r.completed, r.resolved_by_lookup, r.unknown), (10, 10, 0), "{r}");
        assert_eq!(sb.stats().executed, executed, "resolved from the provider's records, not by a send");
        assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "after resolution");
        // Every recorded outcome is a transaction of its own operation.
        let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
        let b = ctx
            .sql("SELECT operation_id, tx_id FROM purpleflea.payouts.log WHERE event = 'completed'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let txs: HashMap<String, String> =
            sb.ledger().transactions().filter_map(|t| Some((t.tx_id.clone(), t.idempotency_key.clone()?))).collect();
        let mut checked = 0;
        for batch in b {
            let cast = |i| arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
            let (ops, tx) = (cast(0), cast(1));
            let ops = ops.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            let tx = tx.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            for i in 0..batch.num_rows() {
                assert_eq!(txs[tx.value(i)], format!("pfsync:default:payout:{}", ops.value(i)));
                checked += 1;
            }
        }
        assert_eq!(checked, 10);
    }
}

/// A provider that ignores `Idempotency-Key` commits the payout and answers 500. A client that trusted
/// the key once repeated the POST and paid again; now no client repeats a POST that may have run, whatever
/// the declaration (shown first). Declared as it is, the POST is sent once, the outcome stays unknown for a
/// person, and reruns send nothing.
#[tokio::test]
async fn a_500_after_the_commit_gets_no_second_post_from_a_provider_that_ignores_keys() {
    let mut cfg = SandboxConfig::for_tests(20);
    cfg.ignore_idempotency_keys = true;
    let sb = Sandbox::start(cfg).await.unwrap();

    // The defect, as it was: a client that trusted keys the provider ignores retried the 500 and paid twice.
    // A client built as if the provider kept keys sends the POST once all the same: it may have run.
    sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
    let trusting = SeedClient::new(client_config(&sb), sb.base_url(), Repeat::KeyedPosts).unwrap();
    let req = pfsync::provider::seed::wire::PayoutRequest {
        agent_id: "agent-000001".into(),
        amount_usd: crate::common::usd("1.00"),
        reason: "defect-demo".into(),
    };
    let key = pfsync::http::IdempotencyKey::derive("t", "payout", "defect-demo").unwrap();
    let e = trusting.payout(&req, Some(&key)).await.expect_err("no second POST");
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(paid_per(&sb, PaidBy::Reference)["defect-demo"], 1, "the trusting client paid once");

    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(5, "k");
    write_pending(&wh, &as_refs(&rows)).await;
    for _ in 0..rows.len() {
        sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
    }
    // What `[provider] honours_idempotency_keys = false` builds: the client's rule follows the declaration.
    let c = client_config(&sb);
    let client = SeedClient::new(c, sb.base_url(), SeedProvider::capabilities_for(false).repeat()).unwrap();
    let provider = SeedProvider::new(client, false);
    let before = sb.stats().executed;
    let r = pay(&provider, &wh).await;
    assert_eq!((r.completed, r.unknown), (0, 5), "{r}");
    assert_eq!(sb.stats().executed - before, 5, "one POST per payout, none repeated");
    assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "a 500 after the commit");
    for rerun in 1..=2 {
        let r = pay(&provider, &wh).await;
        assert_eq!((r.unknown, r.needs_person, r.completed), (5, 5, 0), "rerun {rerun}: {r}");
        assert_eq!(sb.stats().executed - before, 5, "rerun {rerun}: nothing sent again");
    }
    assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "after reruns");
}

/// A deployment of the seed's API declared to keep idempotency keys that does not: it commits each payout,
/// answers 500, and records no key. Nothing is sent again after the 500 (the client repeats no POST that may
/// have run), and the next run, finding no transaction under the key but one that does what the payout did
/// without it, leaves each for a person instead of paying again: 10 operations, 10 payments.
#[tokio::test]
async fn a_provider_misdeclared_as_keeping_keys_still_pays_each_operation_once() {
    let mut cfg = SandboxConfig::for_tests(20);
    cfg.ignore_idempotency_keys = true;
    let sb = Sandbox::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(10, "m");
    write_pending(&wh, &as_refs(&rows)).await;
    for _ in 0..rows.len() {
        sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
    }
    let client = SeedClient::new(client_config(&sb), sb.base_url(), SeedProvider::capabilities_for(true).repeat());
    let provider = SeedProvider::new(client.unwrap(), true);
    let r = pay(&provider, &wh).await;
    assert_eq!((r.completed, r.unknown), (0, 10), "{r}");
    let later = PayoutOptions { clock: crate::common::later_clock(3600), ..PayoutOptions::default() };
    let r = crate::common::pay_with(&provider, &wh, &later).await.unwrap();
    assert_eq!((r.completed, r.unknown, r.needs_person), (0, 10, 10), "{r}");
    assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "a provider that keeps no keys, declared to");
}

/// Two `pfsync payouts` processes at once, and a third once they are paying, against a provider that
/// keeps no keys at all: nothing but the log keeps them from paying the same payout, and each payout is
/// paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_pay_once_against_a_provider_that_ignores_keys() {
    let mut cfg = SandboxConfig::for_tests(50);
    cfg.ignore_idempotency_keys = true;
    cfg.faults.latency_prob = 1.0;
    cfg.faults.latency_min = Duration::from_millis(2);
    cfg.faults.latency_max = Duration::from_millis(10);
    let sb = Sandbox::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let rows = n_payouts(300, "o");
    write_pending(&wh, &as_refs(&rows)).await;
    let config = dir.path().join("pfsync.toml");
    std::fs::write(&config, "[provider]\nhonours_idempotency_keys = false\n").unwrap();
    let path = dir.path().to_path_buf();
    let spawn = |c: &std::path::Path| {
        payouts_cmd(&sb, &path)
            .arg("--config")
            .arg(c)
            .args(["--batch-size", "25", "--concurrency", "8"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let codes = tokio::task::block_in_place(|| {
        let mut a = spawn(&config);
        let mut b = spawn(&config);
        // Joins runs that are known to be sending (300 payouts at 2-10 ms each take them seconds).
        wait_until("the first two runs send a payout", Duration::from_secs(60), || sb.stats().executed > 0);
        let mut c = spawn(&config);
        [a.wait().unwrap(), b.wait().unwrap(), c.wait().unwrap()].map(|s| s.code())
    });
    // A run that met another's intents leaves them to it and says so (exit 6); none fails otherwise.
    assert!(codes.iter().all(|c| matches!(c, Some(0) | Some(6))), "{codes:?}");
    assert_paid_once(&sb, PaidBy::Reference, &references(&rows), "three overlapping runs");
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let completed = "SELECT count(DISTINCT operation_id) FROM purpleflea.payouts.log WHERE event = 'completed'";
    assert_eq!(count(&ctx, completed).await, 300, "every payout has its completed row");
}
