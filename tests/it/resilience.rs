//! Retries, backoff, limits and garbage from the wire: typed errors, never panics, never a double payment.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use pfsync::http::{HttpError, IdempotencyKey, RetryPolicy};
use pfsync::provider::records::*;
use pfsync::provider::seed::SeedError;
use pfsync::provider::seed::wire::PayoutRequest;
use pfsync::sandbox::{Fault, FaultConfig, Sandbox, SandboxConfig};

use crate::common::{PfsyncCommand, client, client_config, pfsync, sandbox, usd};

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    sb.faults().inject_next("/wallets", Some(Fault::RateLimited { retry_after: Some(1) }), None);
    let t = Instant::now();
    c.list::<Wallet>(&ListQuery::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "waited for Retry-After");
    sb.faults().inject_next("/wallets", Some(Fault::RateLimited { retry_after: None }), None);
    c.list::<Wallet>(&ListQuery::default()).await.unwrap();
    assert_eq!(sb.stats().faults, 2);
}

#[tokio::test]
async fn server_errors_are_retried_for_reads_and_never_for_a_post_that_may_have_run() {
    let sb = sandbox(3).await;
    let c = client(&sb);
    for _ in 0..3 {
        sb.faults().inject_next("/wallet/agent-000001", Some(Fault::ErrorBefore), None);
    }
    c.wallet("agent-000001").await.unwrap();
    // A keyed POST through the same faults is not repeated: a 5xx may come after the payment ran, and only
    // the provider's evidence (the engine's lookup) may say whether to send it again. Nothing ran twice.
    for _ in 0..2 {
        sb.faults().inject_next("/wallet/payout", Some(Fault::ErrorBefore), None);
    }
    let k = IdempotencyKey::new("k-5xx").unwrap();
    let req = PayoutRequest { agent_id: "agent-000001".into(), amount_usd: usd("1"), reason: "r".into() };
    let e = c.payout(&req, Some(&k)).await.unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(sb.ledger().transactions().filter(|t| t.idempotency_key.as_deref() == Some("k-5xx")).count(), 0);
}

#[tokio::test]
async fn retries_stop_at_the_attempt_bound_with_a_typed_error() {
    let mut cfg = SandboxConfig::for_tests(3);
    cfg.faults = FaultConfig { seed: 1, error_before_prob: 1.0, ..FaultConfig::default() };
    let sb = Sandbox::start(cfg).await.unwrap();
    let mut ccfg = client_config(&sb);
    ccfg.retry.max_attempts = 3;
    let c = crate::common::seed_client(ccfg);
    let e = c.list::<Wallet>(&ListQuery::default()).await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::Server { status: 500, attempts: 3, .. })), "{e}");
    assert_eq!(sb.stats().requests, 3);

    sb.faults().set(FaultConfig { seed: 1, rate_limit_prob: 1.0, retry_after_prob: 0.0, ..FaultConfig::default() });
    let e = c.wallet("agent-000001").await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::RateLimited { attempts: 3, .. })), "{e}");
}

#[tokio::test]
async fn max_elapsed_bounds_the_retrying() {
    let mut cfg = SandboxConfig::for_tests(3);
    cfg.faults = FaultConfig { seed: 1, error_before_prob: 1.0, ..FaultConfig::default() };
    let sb = Sandbox::start(cfg).await.unwrap();
    let mut ccfg = client_config(&sb);
    ccfg.retry = RetryPolicy {
        max_attempts: 1000,
        max_elapsed: Duration::from_millis(300),
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    };
    let c = crate::common::seed_client(ccfg);
    let e = c.wallet("agent-000001").await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::GaveUp { .. })), "{e}");
    assert!(sb.stats().requests < 100);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_not_buffered() {
    let sb = sandbox(50).await;
    let mut ccfg = client_config(&sb);
    ccfg.max_body_bytes = 1024;
    ccfg.retry.max_attempts = 1;
    let c = crate::common::seed_client(ccfg);
    let e = c.list::<Wallet>(&ListQuery { limit: Some(50), ..ListQuery::default() }).await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::TooLarge { limit: 1024, .. })), "{e}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure_with_no_unknown_outcome() {
    let sb = sandbox(1).await;
    let mut ccfg = client_config(&sb);
    sb.shutdown().await;
    ccfg.retry.max_attempts = 2;
    let c = crate::common::seed_client(ccfg);
    let e = c
        .payout(&PayoutRequest { agent_id: "a".into(), amount_usd: usd("1"), reason: "r".into() }, None)
        .await
        .unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::Transport { connected: false, .. })), "{e}");
    assert!(!e.outcome_unknown());
}

#[tokio::test]
async fn client_side_rate_and_concurrency_limits_hold() {
    let sb = sandbox(3).await;
    let mut ccfg = client_config(&sb);
    ccfg.rate_limit_rps = Some(20.0);
    let c = crate::common::seed_client(ccfg);
    let t = Instant::now();
    for _ in 0..6 {
        c.wallet("agent-000001").await.unwrap();
    }
    assert!(t.elapsed() >= Duration::from_millis(240), "6 starts at 20/s span at least 250 ms: {:?}", t.elapsed());

    let mut ccfg = client_config(&sb);
    ccfg.max_concurrency = 1;
    let c = crate::common::seed_client(ccfg);
    for _ in 0..4 {
        sb.faults().inject_next("/wallet/agent-000002", None, Some(Duration::from_millis(100)));
    }
    let t = Instant::now();
    let calls = (0..4).map(|_| c.wallet("agent-000002"));
    futures::future::try_join_all(calls).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400), "one at a time: {:?}", t.elapsed());
}

#[tokio::test]
async fn a_full_listing_through_chaos_is_complete_and_correct() {
    let mut cfg = SandboxConfig::for_tests(300);
    cfg.faults = FaultConfig { slow_body: Duration::from_millis(16), ..FaultConfig::chaos(7) };
    let sb = Sandbox::start(cfg).await.unwrap();
    let mut ccfg = client_config(&sb);
    ccfg.retry.max_attempts = 20;
    let c = crate::common::seed_client(ccfg);
    let pages: Vec<Page<Wallet>> =
        c.pages::<Wallet>(ListQuery { limit: Some(20), ..ListQuery::default() }).try_collect().await.unwrap();
    let mut ids: Vec<String> = pages.into_iter().flat_map(|p| p.rows).map(|r| r.unwrap().agent_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 301);
    assert!(sb.stats().faults > 0, "chaos injected faults");
}

/// A complete answer that cannot be used (a 2xx body that does not follow the contract, a body over the
/// limit) is asked for once more, never until the attempts run out: the same request gets the same bytes.
#[tokio::test]
async fn an_unreadable_or_oversized_answer_is_asked_for_at_most_twice() {
    let mut cfg = SandboxConfig::for_tests(50);
    cfg.faults = FaultConfig { seed: 1, malformed_prob: 1.0, ..FaultConfig::default() };
    let sb = Sandbox::start(cfg).await.unwrap();
    let c = client(&sb);
    assert!(c.config().retry.max_attempts > 2);
    let e = c.list::<Wallet>(&ListQuery::default()).await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::Decode { status: 200, .. })), "{e}");
    assert_eq!(sb.stats().requests, 2, "one more try, not {}", c.config().retry.max_attempts);

    // A keyed POST, even at a provider that honours keys: it ran (its answer came back), so it is not sent
    // again; the outcome is unknown, for the lookup to resolve. It ran once.
    let before = sb.stats();
    let k = IdempotencyKey::new("k-unreadable").unwrap();
    let req = PayoutRequest { agent_id: "agent-000001".into(), amount_usd: usd("1"), reason: "r".into() };
    let e = c.payout(&req, Some(&k)).await.unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!((sb.stats().requests - before.requests, sb.stats().executed - before.executed), (1, 1));

    sb.faults().set(FaultConfig::default());
    let mut ccfg = client_config(&sb);
    ccfg.max_body_bytes = 1024;
    let c = crate::common::seed_client(ccfg);
    let before = sb.stats().requests;
    let e = c.list::<Wallet>(&ListQuery { limit: Some(50), ..ListQuery::default() }).await.unwrap_err();
    assert!(matches!(e, SeedError::Http(HttpError::TooLarge { limit: 1024, .. })), "{e}");
    assert_eq!(sb.stats().requests - before, 2);
}

/// Makes a folder unwritable, even for root (`chattr +i`), and undoes it on drop so the temp dir can go.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn make(dir: &std::path::Path) -> Option<ReadOnly> {
        use std::os::unix::fs::PermissionsExt;
        let immutable = Command::new("chattr").arg("+i").arg(dir).status().is_ok_and(|s| s.success());
        if !immutable {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).ok()?;
        }
        let guard = ReadOnly(dir.to_path_buf());
        // Root ignores permission bits: only a real refusal makes the test meaningful.
        std::fs::write(dir.join("probe"), b"x").is_err().then_some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_table_folder_is_a_storage_error_without_a_panic() {
    let sb = sandbox(20).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    let sync = |extra: &[&str]| {
        pfsync()
            .sandbox(&sb)
            .arg("-q")
            .warehouse(dir.path())
            .args(["sync", "wallets"])
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| sync(&[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let folder = dir.path().join("purpleflea/agents/wallets");
    let Some(_guard) = ReadOnly::make(&folder) else {
        eprintln!("skipped: cannot make {} read-only here", folder.display());
        return;
    };
    let out = tokio::task::block_in_place(|| sync(&["--full"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "a storage error:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "no dependency panic shows:\n{err}");
    assert!(err.contains("purpleflea.agents.wallets"), "names the table:\n{err}");
}
