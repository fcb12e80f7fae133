//! `pfsync sandbox --proxy-to URL` as processes, in front of real components: a `pfsync sandbox` upstream
//! (hermetic), and Purple Flea's own casino on the test bed ([`crate::live_bed`]). Each fault must happen
//! where its name says, relative to the provider: before it (nothing ran there) or after it (it ran).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

use crate::common::pfsync;

const KEY: &str = "pf_test_sandbox";

/// A `pfsync sandbox` process (plain or `--proxy-to`) on a free loopback port; killed on drop.
pub(crate) struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The first URL of its ready line: `http://127.0.0.1:P/api` (sandbox) or `http://127.0.0.1:P` (proxy).
    pub(crate) url: String,
}

impl Server {
    fn spawn(args: &[&str]) -> Server {
        Server::spawn_logging(args, Stdio::null(), None)
    }

    /// With its log (at `rust_log`, if given) going to `stderr`.
    fn spawn_logging(args: &[&str], stderr: impl Into<Stdio>, rust_log: Option<&str>) -> Server {
        let mut cmd = pfsync();
        cmd.args(["sandbox", "--port", "0"]).args(args);
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("{args:?}: {line}"))
            .to_string();
        Server { child, stdout, url }
    }

    pub(crate) fn proxy(upstream: &str, faults: &[&str]) -> Server {
        let mut args = vec!["--proxy-to", upstream];
        args.extend_from_slice(faults);
        Server::spawn(&args)
    }

    /// Stop it as Ctrl-C would; what it printed after the ready line.
    pub(crate) fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let _ = self.child.wait();
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request; `Err` when the connection failed before a complete answer arrived.
async fn send(
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer, reqwest::Error> {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok(Answer { status, headers, body })
}

async fn get(url: &str, bearer: Option<&str>) -> Answer {
    send(reqwest::Method::GET, url, bearer, None, None).await.unwrap()
}

fn payout(agent: &str, reason: &str) -> Value {
    json!({"agent_id": agent, "amount_usd": 1.25, "reason": reason})
}

/// The upstream sandbox's transactions carrying idempotency key `key`, asked of it directly.
async fn upstream_txs(upstream: &str, key: &str) -> usize {
    let a = get(&format!("{upstream}/transactions?idempotency_key={key}"), Some(KEY)).await;
    assert_eq!(a.status, 200);
    a.json()["data"].as_array().map(Vec::len).unwrap_or_else(|| panic!("{}", a.json()))
}

#[test]
fn requests_pass_through_the_proxy_unchanged() {
    let upstream = Server::spawn(&["--agents", "3"]);
    // Logging everything it and its HTTP stack can: the key must still not show.
    let log = tempfile::NamedTempFile::new().unwrap();
    let proxy = Server::spawn_logging(&["--proxy-to", &upstream.url], log.reopen().unwrap(), Some("trace"));
    block_on(async {
        // A GET: status, content type and body as the upstream gives them; the path goes under /api.
        let direct = get(&format!("{}/wallet/agent-000001", upstream.url), Some(KEY)).await;
        let via = get(&format!("{}/wallet/agent-000001", proxy.url), Some(KEY)).await;
        assert_eq!((via.status, &via.body), (direct.status, &direct.body));
        assert_eq!(via.headers.get("content-type"), direct.headers.get("content-type"));
        // The Authorization header goes on (else 401), and the upstream's 401 comes back as it is.
        let direct = get(&format!("{}/wallets", upstream.url), None).await;
        let via = get(&format!("{}/wallets", proxy.url), None).await;
        assert_eq!((via.status, &via.body), (401, &direct.body));

        // A keyed POST runs once upstream; its repeat is the upstream's replay, marked as one.
        let url = format!("{}/wallet/payout", proxy.url);
        let body = payout("agent-000002", "through the proxy");
        let first = send(reqwest::Method::POST, &url, Some(KEY), Some("px-1"), Some(&body)).await.unwrap();
        assert_eq!(first.status, 200, "{}", first.json());
        assert!(first.headers.get("idempotent-replayed").is_none());
        let again = send(reqwest::Method::POST, &url, Some(KEY), Some("px-1"), Some(&body)).await.unwrap();
        assert_eq!((again.status, &again.body), (200, &first.body));
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        // The query goes on too: the lookup by key through the proxy finds the one transaction.
        let via = get(&format!("{}/transactions?idempotency_key=px-1", proxy.url), Some(KEY)).await;
        assert_eq!(via.json()["data"].as_array().unwrap().len(), 1, "{}", via.json());
        assert_eq!(upstream_txs(&upstream.url, "px-1").await, 1);
        // The upstream's refusal of a bad body comes back as it is.
        let bad = send(reqwest::Method::POST, &url, Some(KEY), Some("px-2"), Some(&json!({"x": 1}))).await.unwrap();
        assert_eq!((bad.status, bad.json()["error"].as_str()), (400, Some("invalid_request")));
    });
    let summary = proxy.stop();
    assert!(summary.contains("stopped after 6 requests (0 faults injected, 6 forwarded, 0 not answered"), "{summary}");
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(log.contains("proxy forwards"), "the log was written: {log}");
    assert!(!log.contains(KEY), "the Authorization header is never logged:\n{log}");
}

#[test]
fn faults_through_the_proxy_happen_before_or_after_the_upstream_ran() {
    let upstream = Server::spawn(&["--agents", "3"]);
    let up = upstream.url.clone();
    let post = |proxy: &Server, key: &'static str| {
        let url = format!("{}/wallet/payout", proxy.url);
        async move { send(reqwest::Method::POST, &url, Some(KEY), Some(key), Some(&payout("agent-000001", key))).await }
    };

    // 500 after: the payout ran upstream, the client is told it failed.
    let proxy = Server::proxy(&up, &["--fault-error-after", "1.0"]);
    let a = block_on(post(&proxy, "fault-after")).unwrap();
    assert_eq!((a.status, a.json()["error"].as_str()), (500, Some("internal")), "{}", a.json());
    assert_eq!(block_on(upstream_txs(&up, "fault-after")), 1, "executed upstream");
    let summary = proxy.stop();
    assert!(summary.contains("after 1 requests (1 faults injected, 1 forwarded"), "{summary}");

    // 500 before: answered by the proxy, the upstream never saw it.
    let proxy = Server::proxy(&up, &["--fault-error-before", "1.0"]);
    let a = block_on(post(&proxy, "fault-before")).unwrap();
    assert_eq!((a.status, a.json()["error"].as_str()), (500, Some("internal")), "{}", a.json());
    assert_eq!(block_on(upstream_txs(&up, "fault-before")), 0, "nothing ran upstream");
    let summary = proxy.stop();
    assert!(summary.contains("after 1 requests (1 faults injected, 0 forwarded"), "{summary}");

    // Connection dropped after the commit: no answer, the payout ran.
    let proxy = Server::proxy(&up, &["--fault-drop-after", "1.0"]);
    let e = block_on(post(&proxy, "fault-drop")).err().expect("the connection is dropped");
    assert!(!e.is_status(), "{e}");
    assert_eq!(block_on(upstream_txs(&up, "fault-drop")), 1, "executed upstream");

    // Malformed: a 200 whose body is cut short, after the payout ran.
    let proxy = Server::proxy(&up, &["--fault-malformed", "1.0"]);
    let a = block_on(post(&proxy, "fault-malformed")).unwrap();
    assert_eq!(a.status, 200);
    assert!(serde_json::from_slice::<Value>(&a.body).is_err(), "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(block_on(upstream_txs(&up, "fault-malformed")), 1, "executed upstream");

    // 429, with or without Retry-After: answered by the proxy.
    let proxy = Server::proxy(&up, &["--fault-rate-limit", "1.0"]);
    let a = block_on(post(&proxy, "fault-429")).unwrap();
    assert_eq!((a.status, a.json()["error"].as_str()), (429, Some("rate_limited")), "{}", a.json());
    assert_eq!(block_on(upstream_txs(&up, "fault-429")), 0, "nothing ran upstream");
    let summary = proxy.stop();
    assert!(summary.contains("after 1 requests (1 faults injected, 0 forwarded"), "{summary}");
}

#[test]
fn an_unreachable_provider_is_a_502_and_plain_http_off_loopback_is_refused() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = Server::proxy(&format!("http://127.0.0.1:{port}/api"), &[]);
    let a = block_on(get(&format!("{}/wallets", proxy.url), Some(KEY)));
    assert_eq!((a.status, a.json()["error"].as_str()), (502, Some("bad_gateway")), "{}", a.json());
    let summary = proxy.stop();
    assert!(summary.contains("1 forwarded, 1 not answered by the provider"), "{summary}");

    for (url, says) in [("http://purpleflea.com/api", "plain http"), ("ftp://127.0.0.1/x", "scheme")] {
        let out = pfsync().args(["sandbox", "--port", "0", "--proxy-to", url]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--proxy-to") && stderr.contains(says), "{url}: {stderr}");
    }
}

/// The Purple Flea casino behind the proxy: a payment answered 500 by the proxy was made all the same.
#[test]
fn a_500_after_from_the_proxy_comes_after_the_real_casino_paid() {
    let Some(bed) = crate::live_bed::bed() else { return };
    let agents = bed.agents(2);
    let ((payer, payer_key, _), (payee, payee_key, _)) = (&agents[0], &agents[1]);
    bed.fund(payer, 10.0);
    let proxy = Server::proxy(&bed.casino_url, &["--fault-error-after", "1.0"]);
    block_on(async {
        let pay = json!({"to_agent_id": payee, "amount": 1.25});
        let a = send(reqwest::Method::POST, &format!("{}/stats/pay", proxy.url), Some(payer_key), None, Some(&pay))
            .await
            .unwrap();
        assert_eq!((a.status, a.json()["error"].as_str()), (500, Some("internal")), "{}", a.json());

        // Asked of the casino directly: the payer's debit and the payee's credit, one payment.
        let ledger = |key: &str| {
            let url = format!("{}/auth/ledger", bed.casino_url);
            let key = key.to_string();
            async move {
                let a = get(&url, Some(&key)).await;
                assert_eq!(a.status, 200, "{}", a.json());
                a.json()["entries"].as_array().cloned().unwrap_or_default()
            }
        };
        let sent: Vec<Value> = ledger(payer_key).await.into_iter().filter(|e| e["reason"] == "payment_sent").collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0]["type"].as_str(), sent[0]["amount"].as_f64()), (Some("debit"), Some(1.25)));
        let received: Vec<Value> =
            ledger(payee_key).await.into_iter().filter(|e| e["reason"] == "payment_received").collect();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0]["reference"], sent[0]["reference"]);
    });
    let summary = proxy.stop();
    assert!(summary.contains("after 1 requests (1 faults injected, 1 forwarded"), "{summary}");
}

/// The casino and the escrow behind the proxy: requests pass through, and a 500 before or a 429 never reaches it.
#[test]
fn the_real_casino_through_the_proxy_sees_nothing_of_a_500_before_or_a_429() {
    let Some(bed) = crate::live_bed::bed() else { return };
    let agents = bed.agents(2);
    let ((payer, payer_key, _), (payee, _, _)) = (&agents[0], &agents[1]);
    bed.fund(payer, 10.0);
    block_on(async {
        let pay = json!({"to_agent_id": payee, "amount": 0.5});
        // Passed through: the casino's own answers, status and body.
        let quiet = Server::proxy(&bed.casino_url, &[]);
        let a = get(&format!("{}/auth/balance", quiet.url), Some(payer_key)).await;
        assert_eq!((a.status, a.json()["balance_usd"].as_f64()), (200, Some(10.0)), "{}", a.json());
        let a = get(&format!("{}/auth/balance", quiet.url), None).await;
        assert_eq!((a.status, a.json()["error"].as_str()), (401, Some("unauthorized")));
        // The escrow service too (its base has no path): its 404, as it gives it.
        let escrow = Server::proxy(&bed.escrow_url, &[]);
        let direct = get(&format!("{}/escrow/esc_0000000000000000", bed.escrow_url), None).await;
        let via = get(&format!("{}/escrow/esc_0000000000000000", escrow.url), None).await;
        assert_eq!((via.status, &via.body), (404, &direct.body), "{}", via.json());

        for faults in [["--fault-error-before", "1.0"], ["--fault-rate-limit", "1.0"]] {
            let proxy = Server::proxy(&bed.casino_url, &faults);
            let url = format!("{}/stats/pay", proxy.url);
            let a = send(reqwest::Method::POST, &url, Some(payer_key), None, Some(&pay)).await.unwrap();
            assert!(a.status == 500 || a.status == 429, "{faults:?}: {}", a.status);
        }
        // Neither payment was made: the balance is untouched.
        let a = get(&format!("{}/auth/balance", bed.casino_url), Some(payer_key)).await;
        assert_eq!(a.json()["balance_usd"].as_f64(), Some(10.0), "{}", a.json());
    });
}
