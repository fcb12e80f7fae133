//! Every endpoint of the contract and every error code, against the sandbox over HTTP.

use pfsync::http::{ErrorBody, HttpError, IdempotencyKey};
use pfsync::money::Usd;
use pfsync::provider::seed::SeedError;
use pfsync::provider::seed::wire::*;
use pfsync::sandbox::ORCHESTRATOR_AGENT;
use serde_json::json;

use crate::common::{client, sandbox, usd};

#[tokio::test]
async fn payout_moves_money_and_records_a_transaction() {
    let sb = sandbox(10).await;
    let c = client(&sb);
    let before = c.wallet("agent-000001").await.unwrap();
    let req = PayoutRequest { agent_id: "agent-000001".into(), amount_usd: usd("12.50"), reason: "task-9".into() };
    let key = IdempotencyKey::new("test:payout:1").unwrap();
    let r = c.payout(&req, Some(&key)).await.unwrap().answer;
    assert_eq!((r.status.as_str(), r.amount_usd, r.agent_id.as_str()), ("completed", usd("12.50"), "agent-000001"));
    let after = c.wallet("agent-000001").await.unwrap();
    assert_eq!(after.balance_usd.cents() - before.balance_usd.cents(), 1250);
    assert_eq!(after.total_earned_usd.cents() - before.total_earned_usd.cents(), 1250);
    let txs: Page<Transaction> =
        c.list(&ListQuery { idempotency_key: Some(key.as_str().into()), ..ListQuery::default() }).await.unwrap();
    let tx = txs.rows[0].as_ref().unwrap();
    assert_eq!(
        (tx.tx_id.as_str(), tx.kind, tx.reference.as_deref()),
        (r.tx_id.as_str(), TxKind::Payout, Some("task-9"))
    );
    assert_eq!(tx.idempotency_key.as_deref(), Some(key.as_str()));
}

#[tokio::test]
async fn escrow_create_release_and_dispute_follow_the_contract() {
    let sb = sandbox(10).await;
    let c = client(&sb);
    let create = EscrowCreateRequest {
        buyer_agent_id: ORCHESTRATOR_AGENT.into(),
        seller_agent_id: "agent-000002".into(),
        amount_usd: usd("50"),
        description: "Data labeling task t-1".into(),
        metadata: Some(json!({"task_id": "t-1", "source": "databricks-workflow"})),
    };
    let buyer_before = c.wallet(ORCHESTRATOR_AGENT).await.unwrap().balance_usd;
    let e = c.escrow_create(&create, None).await.unwrap().answer;
    assert_eq!(e.status, EscrowStatus::Funded);
    assert!(e.tx_id.is_none());
    assert_eq!(c.wallet(ORCHESTRATOR_AGENT).await.unwrap().balance_usd.cents(), buyer_before.cents() - 5000);
    assert_eq!(c.escrow(&e.escrow_id).await.unwrap().metadata, create.metadata);
    assert_eq!(c.wallet("agent-000002").await.unwrap().active_escrow_count, 1);

    // The seed's MLflow callback sends extra fields with the reason.
    let mut extra = serde_json::Map::new();
    extra.insert("mlflow_run_id".into(), json!("run-1"));
    extra.insert("step".into(), json!(7));
    let release = EscrowActionRequest { reason: "val_accuracy=0.9612 exceeded 0.95".into(), extra };
    let seller_before = c.wallet("agent-000002").await.unwrap();
    let r = c.escrow_release(&e.escrow_id, &release, None).await.unwrap().answer;
    assert_eq!(r.status, EscrowStatus::Released);
    let seller_after = c.wallet("agent-000002").await.unwrap();
    assert_eq!(seller_after.balance_usd.cents() - seller_before.balance_usd.cents(), 5000);
    assert_eq!(seller_after.active_escrow_count, 0);
    let again = c.escrow_release(&e.escrow_id, &release, None).await.unwrap_err();
    assert!(matches!(again, SeedError::InvalidState { .. }), "{again}");
    assert_eq!(again.code(), Some("invalid_state"));
    assert_eq!(c.escrow(&e.escrow_id).await.unwrap().tx_id.as_deref(), Some(r.tx_id.as_str()));

    let e2 = c.escrow_create(&create, None).await.unwrap().answer;
    let dispute =
        EscrowActionRequest { reason: "Quality rate 61.0% below 80% threshold".into(), extra: Default::default() };
    let before = c.wallet(ORCHESTRATOR_AGENT).await.unwrap().balance_usd;
    let d = c.escrow_dispute(&e2.escrow_id, &dispute, None).await.unwrap().answer;
    assert_eq!(d.status, EscrowStatus::Refunded);
    assert_eq!(c.wallet(ORCHESTRATOR_AGENT).await.unwrap().balance_usd.cents() - before.cents(), 5000);
    let escrows: Page<Escrow> = c.list(&ListQuery::default()).await.unwrap();
    assert_eq!(escrows.rows.len(), sb.ledger().escrows().count());
    assert!(escrows.rows.iter().any(|e| e.as_ref().unwrap().escrow_id == e2.escrow_id));
}

#[tokio::test]
async fn faucet_pays_once_per_agent() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    let r = c.faucet_claim("agent-000003", None).await.unwrap().answer;
    assert_eq!(r.amount_usd, usd("10.00"));
    let e = c.faucet_claim("agent-000003", None).await.unwrap_err();
    assert!(matches!(e, SeedError::InvalidState { .. }), "{e}");
    let e = c.faucet_claim("nobody", None).await.unwrap_err();
    assert!(matches!(e, SeedError::AgentNotFound { .. }), "{e}");
}

#[tokio::test]
async fn every_error_code_is_typed() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    let pay =
        |agent: &str, amount: Usd| PayoutRequest { agent_id: agent.into(), amount_usd: amount, reason: "r".into() };

    let e = c.payout(&pay("nobody", usd("1")), None).await.unwrap_err();
    assert_eq!(e.code(), Some("agent_not_found"));
    let e = c.escrow("esc_missing").await.unwrap_err();
    assert_eq!(e.code(), Some("escrow_not_found"));
    let e = c.payout(&pay("agent-000001", Usd::ZERO), None).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_request"));
    let poor = EscrowCreateRequest {
        buyer_agent_id: "agent-000001".into(),
        seller_agent_id: "agent-000002".into(),
        amount_usd: usd("100000"),
        description: "too much".into(),
        metadata: None,
    };
    let e = c.escrow_create(&poor, None).await.unwrap_err();
    assert_eq!(e.code(), Some("insufficient_funds"));
    let e = c.wallet("../wallets").await.unwrap_err();
    assert_eq!(e.code(), Some("agent_not_found"), "a path-like id stays one segment: {e}");

    // 401: a wrong key changes nothing.
    let mut cfg = crate::common::client_config(&sb);
    cfg.api_key = Some(pfsync::secret::ApiKey::new("pf_test_wrong", "test").unwrap());
    let wrong = crate::common::seed_client(cfg);
    let before = sb.stats().executed;
    let e = wrong.payout(&pay("agent-000001", usd("1")), None).await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::Unauthorized { .. })), "{e}");
    assert_eq!(sb.stats().executed, before);

    // 409 in use and 422 reused are covered in idempotency.rs; 429 and 5xx in resilience.rs.
}

#[tokio::test]
async fn raw_http_bodies_the_seed_sends_are_accepted_and_bad_amounts_refused() {
    // The seed's notebooks post plain JSON with a float amount and no idempotency key.
    let sb = sandbox(3).await;
    let http = reqwest::Client::new();
    let url = format!("{}/wallet/payout", sb.base_url());
    let send = |body: &'static str| {
        http.post(&url).bearer_auth("pf_test_sandbox").header("content-type", "application/json").body(body).send()
    };
    let ok = send(r#"{"agent_id": "agent-000001", "amount_usd": 19.99, "reason": "task-1"}"#).await.unwrap();
    assert_eq!(ok.status(), 200);
    for bad in [
        r#"{"agent_id": "agent-000001", "amount_usd": 0.001, "reason": "r"}"#,
        r#"{"agent_id": "agent-000001", "amount_usd": -5, "reason": "r"}"#,
        r#"{"agent_id": "agent-000001", "amount_usd": 1e300, "reason": "r"}"#,
        r#"{"agent_id": "agent-000001", "amount_usd": "NaN", "reason": "r"}"#,
        r#"{"agent_id": "agent-000001", "amount_usd": 1000000000000, "reason": "r"}"#,
        r#"{"agent_id": "agent-000001", "reason": "r"}"#,
        r#"not json"#,
    ] {
        let r = send(bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: ErrorBody = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body.error, "invalid_request", "{bad}");
    }
    let r = http.get(format!("{}/wallets", sb.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
