//! The API key never shows: not in Debug output, errors, logs (even at trace level) or exit messages.

use pfsync::config::{Overrides, Settings};
use pfsync::http::ClientConfig;
use pfsync::secret::ApiKey;

use crate::common::{PfsyncCommand, pfsync, sandbox, text};

const SECRET: &str = "pf_live_DO_NOT_PRINT_4f9a1c";

#[tokio::test]
async fn the_key_is_absent_from_debug_and_error_text() {
    let sb = sandbox(2).await;
    let key = ApiKey::new(SECRET, "test").unwrap();
    let cfg = ClientConfig::new(sb.base_url(), key);
    assert!(!format!("{cfg:?}").contains("DO_NOT_PRINT"));
    let c = crate::common::seed_client(cfg);
    assert!(!format!("{c:?}").contains("DO_NOT_PRINT"));
    let e = c.wallet("agent-000001").await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains("DO_NOT_PRINT"));
    let settings = Settings::resolve(&Overrides::default()).unwrap();
    assert!(!format!("{settings:?}").contains("DO_NOT_PRINT"));
}

#[tokio::test]
async fn the_binary_never_prints_the_key_even_at_trace_level() {
    let sb = sandbox(2).await;
    let dir = tempfile::tempdir().unwrap();
    crate::common::init(dir.path());
    let out = tokio::task::spawn_blocking({
        let url = sb.base_url().to_string();
        let wh = dir.path().to_path_buf();
        move || {
            pfsync()
                .provider(&url, SECRET)
                .args(["--max-attempts", "2", "-vv", "sync", "wallets"])
                .warehouse(&wh)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = text(&out);
    assert_eq!(out.status.code(), Some(3), "401 is an API failure: {text}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("DO_NOT_PRINT"), "key leaked:\n{text}");
    assert!(!text.contains("4f9a1c"));
}

#[test]
fn plain_http_to_a_remote_host_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let out = pfsync()
        .args(["--api-url", "http://purpleflea.com/api", "sync"])
        .warehouse(&wh)
        .env("PURPLEFLEA_API_KEY", "pf_test_x")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--api-url") && err.contains("loopback"), "{err}");
    assert!(!wh.exists(), "nothing was touched");
}

#[test]
fn a_key_is_never_accepted_as_a_flag() {
    let out = pfsync().args(["--api-key", SECRET, "sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("DO_NOT_PRINT"), "clap echoes no value of an unknown flag: {err}");
}
