//! No proxy sees a secret unless the config names one: with a sniffing proxy on 127.0.0.1 in every proxy
//! variable of pfsync's environment, a run against the sandbox and the metric rules against a real MLflow
//! server send it nothing; the configured proxy (`[http] proxy`) carries https to other machines only, as a
//! tunnel that shows it a host name and no header; a bad one stops the run before anything is touched.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pfsync::http::{Client, ClientConfig, Repeat};
use pfsync::sandbox::DEFAULT_SANDBOX_KEY;
use pfsync::secret::ApiKey;

use crate::common::{PfsyncCommand, output_in_place as run, pfsync, sandbox, text};
use crate::mlflow_server::server;
use crate::rules::{RuleRow, create_escrows, escrow_status, rules_cmd, write_rules};

const MLFLOW_TOKEN: &str = "mlflow_DO_NOT_FORWARD_77c1";

/// A proxy that answers nothing: it records every connection and what the client sent on it, then hangs up.
struct Sniffer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Sniffer {
    fn start() -> Sniffer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = vec![0; 8192];
                let n = conn.read(&mut buf).unwrap_or(0);
                record.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Sniffer { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Every variable an HTTP stack takes a proxy from, pointing here; nothing exempted.
    fn in_env<'a>(&self, cmd: &'a mut std::process::Command) -> &'a mut std::process::Command {
        for var in pfsync::http::PROXY_VARS {
            cmd.env(var, self.url());
        }
        cmd.env_remove("NO_PROXY").env_remove("no_proxy")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_receives_nothing_while_a_run_pays_against_the_sandbox() {
    let sniffer = Sniffer::start();
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    crate::payouts::write_pending(&wh, &[("px-1", "agent-000001", "1.00", "a"), ("px-2", "agent-000002", "2.00", "b")])
        .await;
    // The configured proxy is for https to other machines: the sandbox (plain http on loopback) never goes
    // through it either.
    let config = dir.path().join("pfsync.toml");
    std::fs::write(&config, format!("[http]\nproxy = \"{}\"\n", sniffer.url())).unwrap();
    let out = tokio::task::block_in_place(|| {
        run(sniffer.in_env(pfsync().sandbox(&sb).config(&config).args(["-vv", "run"]).warehouse(dir.path())))
    });
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("proxy variables ignored"), "the operator is told: {all}");
    let ctx = pfsync::tables::sql_context(&wh).await.unwrap();
    let completed = "SELECT count(*) FROM purpleflea.payouts.log WHERE event = 'completed'";
    assert_eq!(crate::common::count(&ctx, completed).await, 2, "{all}");
    assert_eq!(sniffer.seen(), Vec::<String>::new(), "the proxy was sent something");
    assert!(!all.contains(DEFAULT_SANDBOX_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_never_sees_the_mlflow_token_while_a_rule_releases() {
    let Some(ml) = server() else { return };
    let sniffer = Sniffer::start();
    let sb = crate::rules::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let escrows = create_escrows(&sb, &wh, &[("px-c", "agent-000001", "5.00")]).await;
    let run_id = tokio::task::block_in_place(|| ml.run_with("pfsync-env-proxy", "val_accuracy", &[0.97]));
    let rule = RuleRow {
        rule_id: "px-r",
        create_action_id: Some("px-c"),
        mlflow_run_id: Some(run_id.clone()),
        metric_key: "val_accuracy",
        threshold: Some(0.95),
        direction: ">=",
        reason: Some("good enough"),
        ..RuleRow::default()
    };
    write_rules(&wh, &[rule]).await;
    let out = tokio::task::block_in_place(|| {
        run(sniffer.in_env(rules_cmd(&sb, ml, dir.path()).env("MLFLOW_TRACKING_TOKEN", MLFLOW_TOKEN)))
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(escrow_status(&sb, &escrows["px-c"]), "released", "{}", text(&out));
    assert!(!tokio::task::block_in_place(|| ml.purpleflea_tags(&run_id)).is_empty(), "the run was tagged");
    assert_eq!(sniffer.seen(), Vec::<String>::new(), "the proxy was sent something");
}

#[tokio::test]
async fn the_configured_proxy_tunnels_https_to_another_machine_and_sees_no_key() {
    let sniffer = Sniffer::start();
    let key = ApiKey::new("pf_live_DO_NOT_FORWARD_3e1d", "test").unwrap();
    let mut cfg = ClientConfig::new("https://api.purpleflea.example/v1".parse().unwrap(), key.clone());
    cfg.proxy = Some(sniffer.url().parse().unwrap());
    cfg.retry.max_attempts = 1;
    cfg.timeout = Duration::from_secs(3);
    let client = Client::new(cfg, Repeat::OnlyUnsent).unwrap();
    assert!(client.get_json::<serde_json::Value>(&["wallets"]).await.is_err(), "the sniffer answers nothing");
    let seen = sniffer.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("CONNECT api.purpleflea.example:443 "), "{seen:?}");
    assert!(!seen[0].contains("DO_NOT_FORWARD") && !seen[0].to_ascii_lowercase().contains("authorization"), "{seen:?}");

    // The same proxy for a server on this machine: not used, even over https.
    let mut local = ClientConfig::new("https://127.0.0.1:9/v1".parse().unwrap(), key);
    local.proxy = Some(sniffer.url().parse().unwrap());
    local.retry.max_attempts = 1;
    let _ = Client::new(local, Repeat::OnlyUnsent).unwrap().get_json::<serde_json::Value>(&["wallets"]).await;
    assert_eq!(sniffer.seen().len(), 1, "loopback went through the proxy");
}

#[test]
fn a_bad_proxy_in_the_config_stops_the_run_with_exit_2_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    for bad in ["socks5://127.0.0.1:1080", "proxy.corp:3128", "http://user:pw_SECRET@proxy.corp:3128/some/path"] {
        let config = dir.path().join("pfsync.toml");
        std::fs::write(&config, format!("[http]\nproxy = \"{bad}\"\n")).unwrap();
        let out = pfsync()
            .args(["--api-url", "http://127.0.0.1:9/api", "sync"])
            .config(&config)
            .warehouse(&wh)
            .env("PURPLEFLEA_API_KEY", "pf_test_x")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("[http] proxy"), "{err}");
        assert!(!err.contains("pw_SECRET"), "{err}");
        assert!(!wh.exists(), "nothing was touched");
    }
}
