//! A hostile or broken provider: a tiny HTTP server on 127.0.0.1 that answers what each test tells it to
//! (a cursor that repeats, pages that never end, rows with hostile fields), and the binary run against it.
//! Every case ends with a documented exit code, in bounded time, and nothing hostile reaches a table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde_json::{Value, json};

use crate::common::{self, PfsyncCommand, output_within, text};

type Answer = dyn Fn(&Uri, u64) -> (u16, String, Duration) + Send + Sync;

/// The provider: `answer(uri, n)` gives the status, body and delay of the n-th request (from 0).
pub struct Provider {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    pub async fn start(answer: impl Fn(&Uri, u64) -> (u16, String, Duration) + Send + Sync + 'static) -> Provider {
        let requests = Arc::new(AtomicU64::new(0));
        let state: (Arc<Answer>, Arc<AtomicU64>) = (Arc::new(answer), Arc::clone(&requests));
        let app = axum::Router::new()
            .fallback(|State((answer, n)): State<(Arc<Answer>, Arc<AtomicU64>)>, uri: Uri| async move {
                let (status, body, delay) = answer(&uri, n.fetch_add(1, Ordering::SeqCst));
                tokio::time::sleep(delay).await;
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, [("content-type", "application/json")], body)
            })
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider { addr, requests, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn wallet(agent_id: &str, referral_code: &str, minute: u32) -> Value {
    json!({
        "agent_id": agent_id,
        "wallet_address": "0xabc",
        "balance_usd": 12.5,
        "active_escrow_count": 0,
        "total_earned_usd": 20,
        "referral_code": referral_code,
        "registered_at": "2026-01-01T00:00:00Z",
        "updated_at": format!("2026-01-02T00:{minute:02}:00Z"),
    })
}

pub fn page(rows: Vec<Value>, next: Option<String>) -> String {
    json!({ "data": rows, "next_cursor": next }).to_string()
}

/// `pfsync` against `url` with quick client bounds; killed (and reported as `None`) after `limit`.
pub fn pfsync(url: &str, wh: &std::path::Path, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    common::init(wh);
    let mut cmd = common::pfsync();
    cmd.provider(url, "pf_test_hostile")
        .client_budget(5, 3)
        .args(["--max-attempts", "3", "-q"])
        .warehouse(wh)
        .args(args);
    // Killed at the limit, it has no exit code.
    let out = output_within(&mut cmd, limit).unwrap_or_else(|killed| killed);
    (out.status.code(), text(&out))
}

fn run_blocking(url: &str, wh: &std::path::Path, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    tokio::task::block_in_place(|| pfsync(url, wh, args, limit))
}

/// The wallets table's agent ids, or `None` when no sync ever committed it.
async fn wallet_ids(dir: &std::path::Path) -> Option<Vec<String>> {
    let wh = pfsync::tables::Warehouse::local(dir).unwrap();
    let table = pfsync::tables::open_existing(&wh, &pfsync::tables::WALLETS).await.unwrap()?;
    if table.get_file_uris().unwrap().next().is_none() {
        return Some(Vec::new());
    }
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let batches = ctx
        .sql("SELECT agent_id FROM purpleflea.agents.wallets ORDER BY agent_id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for b in batches {
        let col = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    Some(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_that_repeats_is_refused_and_nothing_from_the_loop_is_committed() {
    // Every page says "there is more, at the same place": a client that follows it never stops.
    let p = Provider::start(|_, n| {
        let rows = vec![wallet(&format!("agent-{n:06}"), "PF1", (n % 60) as u32)];
        (200, page(rows, Some("same-place".into())), Duration::ZERO)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_blocking(&p.url(), dir.path(), &["sync", "wallets"], Duration::from_secs(30));
    assert_eq!(code, Some(3), "refused as an API failure:\n{out}");
    assert!(out.contains("cursor"), "says why:\n{out}");
    assert!(p.requests() <= 3, "stopped at the repeat, not after {} requests", p.requests());
    assert_eq!(wallet_ids(dir.path()).await.unwrap_or_default(), Vec::<String>::new(), "nothing committed");

    // A longer cycle (a -> b -> a) is a repeat too.
    let p = Provider::start(|_, n| {
        let next = if n % 2 == 0 { "a" } else { "b" };
        (200, page(vec![wallet(&format!("agent-{n:06}"), "PF1", 1)], Some(next.into())), Duration::ZERO)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_blocking(&p.url(), dir.path(), &["sync", "wallets"], Duration::from_secs(30));
    assert_eq!(code, Some(3), "{out}");
    assert!(p.requests() <= 4, "{} requests", p.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_rows_and_time_of_one_sync_are_capped() {
    // A provider that always has one more page of new rows, each behind a new cursor.
    let endless = |delay: Duration| {
        move |_: &Uri, n: u64| {
            let rows = (0..10).map(|i| wallet(&format!("agent-{n:04}-{i}"), "PF1", (n % 60) as u32)).collect();
            (200, page(rows, Some(format!("c{n}"))), delay)
        }
    };
    let p = Provider::start(endless(Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) =
        run_blocking(&p.url(), dir.path(), &["sync", "wallets", "--max-pages", "5"], Duration::from_secs(30));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("--max-pages"), "names the flag to raise:\n{out}");
    assert!(p.requests() <= 6, "{} requests", p.requests());
    assert_eq!(wallet_ids(dir.path()).await.unwrap_or_default().len(), 0, "nothing committed from the loop");

    let p = Provider::start(endless(Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) =
        run_blocking(&p.url(), dir.path(), &["sync", "wallets", "--max-rows", "35"], Duration::from_secs(30));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("--max-rows"), "{out}");
    assert!(p.requests() <= 4, "{} requests", p.requests());

    // Slow pages: the deadline ends the sync, whatever the page and row caps allow.
    let p = Provider::start(endless(Duration::from_millis(300))).await;
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (code, out) =
        run_blocking(&p.url(), dir.path(), &["sync", "wallets", "--max-sync-secs", "2"], Duration::from_secs(30));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("--max-sync-secs"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(10), "ended by the deadline: {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fields_fail_their_row_alone_and_the_rest_are_written() {
    let huge = "R".repeat(5 << 20);
    let hostile_id = "agent-2\u{0}\n../../x";
    let rows = vec![
        wallet("agent-1", "PF1", 1),
        wallet(hostile_id, "PF2", 2),
        wallet("agent-3", &huge, 3),
        wallet("agent-4", "PF\u{7}4", 4),
        wallet(&"a".repeat(200), "PF5", 5),
        wallet("agent-6", "PF6", 6),
    ];
    let body = page(rows, None);
    let p = Provider::start(move |_, _| (200, body.clone(), Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_blocking(&p.url(), dir.path(), &["sync", "wallets"], Duration::from_secs(60));
    assert_eq!(code, Some(5), "rows failed:\n{}", &out[..out.len().min(4000)]);
    assert!(out.len() < 100_000, "the 5 MB field is not echoed ({} bytes of output)", out.len());
    // The hostile id is in the log, escaped: no NUL, no line break of its own.
    assert!(out.contains(r"agent-2\0\n../../x"), "{out}");
    assert!(!out.contains('\u{0}') && !out.contains("\n../../x"), "{out:?}");
    for id in ["agent-3", "agent-4"] {
        assert!(out.contains(id), "{id} is named:\n{out}");
    }
    assert_eq!(wallet_ids(dir.path()).await.unwrap(), vec!["agent-1".to_string(), "agent-6".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_api_url_are_refused_and_never_echoed() {
    let p = Provider::start(|_, _| (200, page(vec![], None), Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let with_password = format!("http://user:s3cr3t-pw@{}/api", p.addr);
    let with_user = format!("http://s3cr3t-pw@{}/api", p.addr);
    let cases: Vec<Vec<String>> = vec![
        vec!["--api-url".into(), with_password.clone()],
        vec!["--api-url".into(), with_user],
        vec!["--faucet-url".into(), with_password.clone()],
        vec!["--api-url".into(), "http://user:s3cr3t-pw@purpleflea.com/api".into()],
        vec!["--api-url".into(), "https://user:s3cr3t-pw@purpleflea.com/api".into()],
        vec!["--api-url".into(), "https://user:s3cr3t-pw@[::1/api".into()],
    ];
    let good = p.url();
    for case in cases {
        let out = tokio::task::block_in_place(|| {
            common::pfsync()
                .provider(&good, "pf_test_hostile")
                .arg("-vv")
                .args(&case)
                .warehouse(&wh)
                .args(["sync", "wallets"])
                .env("RUST_LOG", "trace")
                .output()
                .unwrap()
        });
        let text = text(&out);
        assert_eq!(out.status.code(), Some(2), "{case:?}:\n{text}");
        assert!(!text.contains("s3cr3t"), "{case:?} echoed the credential:\n{text}");
        assert!(text.contains(&case[0]), "names the flag: {text}");
    }
    // From the environment too.
    let out = tokio::task::block_in_place(|| {
        common::pfsync()
            .warehouse(&wh)
            .args(["sync", "wallets"])
            .env("PFSYNC_API_URL", &with_password)
            .env("PURPLEFLEA_API_KEY", "pf_test_hostile")
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert_eq!(p.requests(), 0, "no request left with a credential in it");
    assert!(!wh.exists(), "nothing was touched");

    let o = pfsync::config::Overrides { api_url: Some(with_password), ..Default::default() };
    let e = pfsync::config::Settings::resolve(&o).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e:?}");
}

#[tokio::test]
async fn a_page_that_does_not_follow_the_contract_is_asked_for_twice_not_eight_times() {
    let p = Provider::start(|_, _| (200, r#"{"data": "not rows", "next_cursor": null}"#.into(), Duration::ZERO)).await;
    let url = url::Url::parse(&p.url()).unwrap();
    let key = pfsync::secret::ApiKey::new("pf_test_hostile", "test").unwrap();
    let mut cfg = pfsync::http::ClientConfig::new(url, key);
    cfg.retry.base_delay = Duration::from_millis(5);
    let c = crate::common::seed_client(cfg);
    let e = c.list::<pfsync::provider::records::Wallet>(&Default::default()).await.unwrap_err();
    assert!(
        matches!(e, pfsync::provider::seed::SeedError::Http(pfsync::http::HttpError::Decode { status: 200, .. })),
        "{e}"
    );
    assert_eq!(p.requests(), 2);
}
