//! `pfsync sandbox`: the stand-in Purple Flea API as a server, or with `--proxy-to` its faults in front of a
//! real provider, until Ctrl-C or SIGTERM.

use std::net::IpAddr;
use std::time::Duration;

use super::error::AppError;
use crate::cli::{FaultArgs, LookupFaultArg, SandboxArgs};
use crate::money::Usd;
use crate::sandbox::{
    ConnectionLimits, DEFAULT_SANDBOX_KEY, FaultConfig, Proxy, ProxyConfig, Sandbox, SandboxConfig, SeedConfig,
};
use crate::secret::{API_KEY_ENV, ApiKey};

pub(super) fn fault_config(seed: u64, f: &FaultArgs) -> Result<FaultConfig, AppError> {
    let base = if f.chaos { FaultConfig::chaos(seed) } else { FaultConfig { seed, ..FaultConfig::default() } };
    let cfg = FaultConfig {
        latency_prob: f.fault_latency.unwrap_or(base.latency_prob),
        rate_limit_prob: f.fault_rate_limit.unwrap_or(base.rate_limit_prob),
        max_rps: f.fault_max_rps.or(base.max_rps),
        error_before_prob: f.fault_error_before.unwrap_or(base.error_before_prob),
        error_after_prob: f.fault_error_after.unwrap_or(base.error_after_prob),
        drop_after_prob: f.fault_drop_after.unwrap_or(base.drop_after_prob),
        slow_body_prob: f.fault_slow_body.unwrap_or(base.slow_body_prob),
        malformed_prob: f.fault_malformed.unwrap_or(base.malformed_prob),
        latency_min: f.fault_latency_ms.map_or(base.latency_min, Duration::from_millis),
        latency_max: f.fault_latency_ms.map_or(base.latency_max, Duration::from_millis),
        ..base
    };
    cfg.validate().map_err(|e| AppError::Usage(format!("--fault-*: {e}")))?;
    Ok(cfg)
}

pub(super) async fn sandbox(args: &SandboxArgs) -> Result<(), AppError> {
    if let Some(url) = &args.proxy_to {
        return proxy(args, url).await;
    }
    let faucet_amount =
        Usd::parse_positive(&args.faucet_amount).map_err(|e| AppError::Usage(format!("--faucet-amount: {e}")))?;
    let api_key = match std::env::var(API_KEY_ENV) {
        Ok(k) => ApiKey::new(&k, "in PURPLEFLEA_API_KEY").map_err(|e| AppError::Usage(e.to_string()))?,
        Err(_) => crate::sandbox::default_key(),
    };
    check_exposure(args.host, &api_key, args.admin)?;
    let cfg = SandboxConfig {
        host: args.host,
        port: args.port,
        world: SeedConfig { agents: args.agents, seed: args.seed, faucet_amount, ..SeedConfig::default() },
        api_key,
        idempotency_retention: Duration::from_secs(args.idempotency_retention_secs),
        faults: fault_config(args.seed, &args.faults)?,
        admin: args.admin,
        ignore_idempotency_keys: args.ignore_idempotency_keys,
        lookup_fault: args.lookup_fault.map(|f| match f {
            LookupFaultArg::Garble => crate::sandbox::LookupFault::Garble,
            LookupFaultArg::IgnoreFilter => crate::sandbox::LookupFault::IgnoreFilter,
        }),
        limits: limits(args),
    };
    let (host, port) = (args.host, args.port);
    let sb = Sandbox::start(cfg).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another process listens there (a sandbox already running?): stop it, or pick another --port \
             (--port 0 picks a free one)"
        } else {
            ""
        };
        AppError::Usage(format!("cannot start the sandbox on {}: {e}{hint}", std::net::SocketAddr::new(host, port)))
    })?;
    println!(
        "pfsync sandbox ready at {} ({} agents, seed {}); Ctrl-C stops it",
        sb.base_url(),
        args.agents + 1,
        args.seed
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    let stats = sb.stats();
    sb.shutdown().await;
    println!("pfsync sandbox stopped after {} requests ({} faults injected)", stats.requests, stats.faults);
    Ok(())
}

fn limits(args: &SandboxArgs) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
    }
}

/// `pfsync sandbox --proxy-to URL`: the faults in front of a real provider.
async fn proxy(args: &SandboxArgs, url: &str) -> Result<(), AppError> {
    let upstream = proxy_target(url)?;
    if !args.host.to_canonical().is_loopback() {
        return Err(AppError::Usage(format!(
            "--host {} is not a loopback address: the proxy would forward anyone's requests to {upstream}. \
             Listen on 127.0.0.1",
            args.host
        )));
    }
    let cfg = ProxyConfig {
        host: args.host,
        port: args.port,
        upstream,
        faults: fault_config(args.seed, &args.faults)?,
        limits: limits(args),
        upstream_timeout: crate::sandbox::proxy::DEFAULT_UPSTREAM_TIMEOUT,
        posts_only: args.fault_posts_only,
    };
    let p = Proxy::start(cfg).await.map_err(|e| AppError::Usage(format!("cannot start the proxy: {e}")))?;
    println!(
        "pfsync sandbox proxy ready at {} -> {} (seed {}); Ctrl-C stops it",
        p.base_url(),
        p.upstream(),
        args.seed
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    let stats = p.stats();
    p.shutdown().await;
    println!(
        "pfsync sandbox proxy stopped after {} requests ({} faults injected, {} forwarded, {} not answered by the \
         provider)",
        stats.requests, stats.faults, stats.forwarded, stats.upstream_failures
    );
    Ok(())
}

/// `--proxy-to`: an http(s) base URL, plain http only to a loopback host (as for `--api-url`).
fn proxy_target(url: &str) -> Result<url::Url, AppError> {
    let shown = crate::http::shown_text(url);
    let u = url::Url::parse(url).map_err(|e| AppError::Usage(format!("--proxy-to {shown:?}: {e}")))?;
    crate::http::check_url(&u).map_err(|e| AppError::Usage(format!("--proxy-to: {e}")))?;
    if u.query().is_some() || u.fragment().is_some() {
        return Err(AppError::Usage(format!("--proxy-to {shown:?}: a base URL has no query or fragment")));
    }
    Ok(u)
}

/// Off loopback, anyone who can reach the port can use the sandbox: with the key every copy of pfsync
/// documents, they can, and with `--admin` they can also plant transactions and set balances. Both need a
/// key of the operator's own.
fn check_exposure(host: IpAddr, key: &ApiKey, admin: bool) -> Result<(), AppError> {
    if host.to_canonical().is_loopback() || !key.matches(DEFAULT_SANDBOX_KEY) {
        return Ok(());
    }
    let what = if admin { "its well-known key and admin controls" } else { "its well-known key" };
    Err(AppError::Usage(format!(
        "--host {host} is not a loopback address: the sandbox would serve {what} ({DEFAULT_SANDBOX_KEY}) to the \
         network. Set {API_KEY_ENV} to a key of your own, or listen on 127.0.0.1"
    )))
}

pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_to_takes_https_anywhere_and_plain_http_only_to_loopback() {
        for ok in [
            "https://casino.purpleflea.com/api/v1",
            "http://127.0.0.1:9000/api/v1",
            "http://[::1]:1",
            "http://localhost:2/x",
        ] {
            assert!(proxy_target(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://casino.purpleflea.com/api/v1", "plain http"),
            ("http://10.0.0.1/api", "plain http"),
            ("ftp://127.0.0.1/x", "scheme"),
            ("http://user:pw@127.0.0.1/x", "user name"),
            ("http://127.0.0.1/x?a=1", "query"),
            ("not a url", "--proxy-to"),
        ] {
            let e = proxy_target(bad).unwrap_err();
            assert!(matches!(e, AppError::Usage(_)), "{bad}");
            let e = e.to_string();
            assert!(e.contains("--proxy-to") && e.contains(says), "{bad}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn only_loopback_may_use_the_well_known_key() {
        let default = crate::sandbox::default_key();
        let own = ApiKey::new("pf_test_operators_own", "test").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for host in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(check_exposure(ip(host), &default, true).is_ok(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "::ffff:10.0.0.5"] {
            let e = check_exposure(ip(host), &default, false).unwrap_err().to_string();
            assert!(e.contains("--host") && e.contains(API_KEY_ENV), "{e}");
            assert!(check_exposure(ip(host), &default, true).unwrap_err().to_string().contains("admin"));
            assert!(check_exposure(ip(host), &own, true).is_ok(), "{host}");
        }
    }
}
