//! Idempotency as the contract states it: replay byte for byte, 409 while in flight, 422 on another body,
//! retention; and a client that resolves a lost answer by resending with the same key.

use std::time::Duration;

use pfsync::http::{ErrorBody, IdempotencyKey, RetryPolicy};
use pfsync::provider::seed::SeedError;
use pfsync::provider::seed::wire::*;
use pfsync::sandbox::{Fault, Sandbox, SandboxConfig};

use crate::common::{client, sandbox, until, usd};

fn payout(agent: &str, amount: &str) -> PayoutRequest {
    PayoutRequest { agent_id: agent.into(), amount_usd: usd(amount), reason: "bonus".into() }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

async fn raw_post(sb: &Sandbox, key: &str, body: &str) -> (u16, bytes::Bytes) {
    let r = reqwest::Client::new()
        .post(format!("{}/wallet/payout", sb.base_url()))
        .bearer_auth("pf_test_sandbox")
        .header("Idempotency-Key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap())
}

fn txs_with_key(sb: &Sandbox, key: &str) -> usize {
    sb.ledger().transactions().filter(|t| t.idempotency_key.as_deref() == Some(key)).count()
}

#[tokio::test]
async fn a_repeat_with_the_same_key_replays_byte_for_byte_and_moves_no_money() {
    let sb = sandbox(3).await;
    let body = r#"{"agent_id":"agent-000001","amount_usd":5.25,"reason":"r"}"#;
    let (s1, b1) = raw_post(&sb, "k-replay", body).await;
    let balance = sb.ledger().wallet("agent-000001").unwrap().balance_usd;
    // Same JSON, other key order and spacing: the same request.
    let (s2, b2) =
        raw_post(&sb, "k-replay", r#"{ "reason": "r", "amount_usd": 5.25, "agent_id": "agent-000001" }"#).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1, b2);
    assert_eq!(sb.ledger().wallet("agent-000001").unwrap().balance_usd, balance);
    assert_eq!(txs_with_key(&sb, "k-replay"), 1);
    assert_eq!(sb.stats().replays, 1);
}

/// The client surfaces `Idempotent-Replayed: true`: a call answered from the provider's memory of an
/// earlier call says so, and the provider ran the operation once.
#[tokio::test]
async fn a_replayed_answer_is_marked_as_a_replay() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    let k = key("k-replayed");
    let first = c.payout(&payout("agent-000002", "3.00"), Some(&k)).await.unwrap();
    let again = c.payout(&payout("agent-000002", "3.00"), Some(&k)).await.unwrap();
    assert_eq!((first.replayed, again.replayed), (false, true));
    assert_eq!(first.answer, again.answer);
    assert_eq!((txs_with_key(&sb, "k-replayed"), sb.stats().replays), (1, 1));
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_with_422() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    c.payout(&payout("agent-000001", "1.00"), Some(&key("k-422"))).await.unwrap();
    let e = c.payout(&payout("agent-000001", "2.00"), Some(&key("k-422"))).await.unwrap_err();
    assert!(matches!(e, SeedError::IdempotencyKeyReused { .. }), "{e}");
    assert!(!e.outcome_unknown());
    assert_eq!(txs_with_key(&sb, "k-422"), 1);
}

/// The sandbox holds the first request in flight (its key claimed) until the test lets it go: the second
/// is sent only once the first is known to be running, and the first ends only after the second's answer.
#[tokio::test]
async fn a_second_request_while_the_first_runs_gets_409_and_the_client_waits_it_out() {
    let sb = sandbox(3).await;
    let hold = sb.faults().hold_next("/wallet/payout");
    let body = r#"{"agent_id":"agent-000002","amount_usd":3,"reason":"r"}"#;
    let first = raw_post(&sb, "k-409", body);
    let second = async {
        hold.reached().await;
        let answer = raw_post(&sb, "k-409", body).await;
        hold.release();
        answer
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(first, second);
    assert_eq!(s1, 200);
    assert_eq!(s2, 409);
    let err: ErrorBody = serde_json::from_slice(&b2).unwrap();
    assert_eq!(err.error, "idempotency_key_in_use");

    // The client treats 409-in-use as "not settled yet" and retries with the same key until the replay.
    let hold = sb.faults().hold_next("/wallet/payout");
    let mut cfg = crate::common::client_config(&sb);
    cfg.retry = RetryPolicy {
        max_attempts: 40,
        max_elapsed: Duration::from_secs(20),
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    };
    let c = crate::common::seed_client(cfg);
    let req = payout("agent-000002", "4.00");
    let k = key("k-409-client");
    let (a, b) = tokio::join!(c.payout(&req, Some(&k)), async {
        hold.reached().await;
        let held = sb.stats().requests;
        let release = async {
            // A request after the second call's first means that one was answered: 409, the key in flight.
            until("the second call's first answer", Duration::from_secs(20), || sb.stats().requests >= held + 2).await;
            hold.release();
        };
        tokio::join!(c.payout(&req, Some(&k)), release).0
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.answer.tx_id, b.answer.tx_id);
    assert_eq!(txs_with_key(&sb, "k-409-client"), 1);
    // The second call waited out the first one's 409 and got its replay: it moved no money.
    assert_eq!((a.replayed, b.replayed), (false, true));
    let _ = b1;
}

#[tokio::test]
async fn a_failure_after_commit_is_resolved_by_the_same_key_not_a_second_payment() {
    for fault in [Fault::ErrorAfter, Fault::DropAfter, Fault::Malformed, Fault::SlowBody] {
        let sb = sandbox(3).await;
        let c = client(&sb);
        let k = key(&format!("k-after-{fault:?}"));
        let before = sb.ledger().wallet("agent-000003").unwrap().balance_usd;
        sb.faults().inject_next("/wallet/payout", Some(fault), None);
        // The POST ran and its answer was lost or unreadable: it is not sent again (it may have run), the
        // outcome is unknown, and the lookup by the same key finds what it did.
        let tx_id = match c.payout(&payout("agent-000003", "7.77"), Some(&k)).await {
            Ok(r) => {
                assert!(!r.replayed, "{fault:?}");
                r.answer.tx_id
            }
            Err(e) => {
                assert!(e.outcome_unknown(), "{fault:?}: {e}");
                let q = ListQuery { idempotency_key: Some(k.as_str().into()), ..ListQuery::default() };
                let page = c.list::<pfsync::provider::records::Transaction>(&q).await.unwrap();
                assert_eq!(page.rows.len(), 1, "{fault:?}");
                page.rows[0].as_ref().unwrap().tx_id.clone()
            }
        };
        let after = sb.ledger().wallet("agent-000003").unwrap().balance_usd;
        assert_eq!(after.cents() - before.cents(), 777, "{fault:?}: paid exactly once");
        assert_eq!(txs_with_key(&sb, k.as_str()), 1, "{fault:?}");
        assert_eq!(sb.ledger().transactions().find(|t| t.tx_id == tx_id).map(|t| t.amount_usd), Some(usd("7.77")));
    }
}

#[tokio::test]
async fn without_a_key_an_unknown_outcome_is_reported_never_resent() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
    let executed = sb.stats().executed;
    let e = c.payout(&payout("agent-000001", "1.00"), None).await.unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(sb.stats().executed, executed + 1, "sent once, not retried");

    // A failure before anything ran (429) is safe to repeat even without a key.
    sb.faults().inject_next("/wallet/payout", Some(Fault::RateLimited { retry_after: None }), None);
    c.payout(&payout("agent-000001", "1.00"), None).await.unwrap();
    assert_eq!(sb.stats().executed, executed + 2);
}

#[tokio::test]
async fn keys_expire_after_the_configured_retention() {
    let mut cfg = SandboxConfig::for_tests(3);
    cfg.idempotency_retention = Duration::from_millis(200);
    let sb = Sandbox::start(cfg).await.unwrap();
    let body = r#"{"agent_id":"agent-000001","amount_usd":1,"reason":"r"}"#;
    let (_, b1) = raw_post(&sb, "k-expire", body).await;
    let (_, b2) = raw_post(&sb, "k-expire", body).await;
    assert_eq!(b1, b2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, b3) = raw_post(&sb, "k-expire", body).await;
    assert_ne!(b1, b3, "after the retention the key is new again");
    assert_eq!(txs_with_key(&sb, "k-expire"), 2);
}
