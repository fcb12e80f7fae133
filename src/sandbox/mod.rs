//! The sandbox: an in-memory Purple Flea that follows the contract (idempotency, pagination, the closed
//! ledger) and injects faults on demand. `pfsync sandbox` serves it on a port; tests and `pfsync demo`
//! start it in-process with [`Sandbox::start`]. [`Proxy`] (`pfsync sandbox --proxy-to URL`) injects the same
//! faults in front of a real provider instead.

pub mod connections;
pub mod cursor;
pub mod faults;
pub mod idempotency;
pub mod inject;
pub mod ledger;
pub mod mlflow_stub;
pub mod proxy;
pub mod refusal;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use url::Url;

pub use connections::ConnectionLimits;
pub use faults::{Fault, FaultConfig, FaultPlan, Hold};
pub use ledger::{Ledger, ORCHESTRATOR_AGENT, SeedConfig};
pub use proxy::{Proxy, ProxyConfig, ProxyStatsSnapshot};
pub use server::StatsSnapshot;

use crate::secret::ApiKey;

/// The key the sandbox accepts when `PURPLEFLEA_API_KEY` is not set.
pub const DEFAULT_SANDBOX_KEY: &str = "pf_test_sandbox";

/// A request's headers must arrive within this (and a kept-alive connection's next request start).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that moves no byte for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub world: SeedConfig,
    pub api_key: ApiKey,
    pub idempotency_retention: Duration,
    pub faults: FaultConfig,
    /// Serve `/api/admin/...` (plant discrepancies for reconciliation tests). Off unless asked for.
    pub admin: bool,
    /// Behave like a provider that does not implement idempotency: `Idempotency-Key` is neither replayed
    /// nor kept on the transaction (so it cannot be looked up either).
    pub ignore_idempotency_keys: bool,
    /// Misbehave on `GET /transactions?idempotency_key=` (the lookup pfsync resolves unknowns with).
    pub lookup_fault: Option<LookupFault>,
    /// How long a client may hold a connection without sending.
    pub limits: ConnectionLimits,
}

/// How a broken provider answers a lookup by idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFault {
    /// The matching transactions come back with an amount no client can read.
    Garble,
    /// The filter is ignored: the first page of all transactions comes back.
    IgnoreFilter,
}

impl LookupFault {
    pub fn parse(s: &str) -> Option<LookupFault> {
        match s {
            "garble" => Some(LookupFault::Garble),
            "ignore-filter" => Some(LookupFault::IgnoreFilter),
            _ => None,
        }
    }
}

impl SandboxConfig {
    /// Loopback, a free port, the default key and world, no faults: what a test wants.
    pub fn for_tests(agents: usize) -> SandboxConfig {
        SandboxConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            world: SeedConfig { agents, ..SeedConfig::default() },
            api_key: default_key(),
            idempotency_retention: Duration::from_secs(24 * 3600),
            faults: FaultConfig::default(),
            admin: false,
            ignore_idempotency_keys: false,
            lookup_fault: None,
            limits: ConnectionLimits {
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
        }
    }
}

/// The sandbox's default key, always valid.
pub fn default_key() -> ApiKey {
    ApiKey::new(DEFAULT_SANDBOX_KEY, "built in").unwrap_or_else(|_| unreachable_key())
}

fn unreachable_key() -> ApiKey {
    // DEFAULT_SANDBOX_KEY is a valid literal; this exists only so no `unwrap` sits on a code path.
    ApiKey::new("pf_test_x", "built in").unwrap_or_else(|_| std::process::abort())
}

/// A running sandbox. Dropping it stops the server.
pub struct Sandbox {
    serving: connections::Serving,
    state: Arc<server::SandboxState>,
}

impl Sandbox {
    /// Seed the world, bind, and serve in the background on the current tokio runtime.
    pub async fn start(cfg: SandboxConfig) -> std::io::Result<Sandbox> {
        cfg.faults.validate().map_err(std::io::Error::other)?;
        let world = cfg.world.clone();
        // Seeding a large world is CPU work; keep it off the async workers.
        let ledger =
            tokio::task::spawn_blocking(move || Ledger::seeded(&world)).await.map_err(std::io::Error::other)?;
        let state = Arc::new(server::SandboxState {
            ledger: Mutex::new(ledger),
            idempotency: Mutex::new(idempotency::IdempotencyStore::new(cfg.idempotency_retention)),
            faults: FaultPlan::new(cfg.faults.clone()),
            stats: server::SandboxStats::default(),
            api_key: cfg.api_key.clone(),
            admin: cfg.admin,
            ignore_idempotency_keys: cfg.ignore_idempotency_keys,
            lookup_fault: Mutex::new(cfg.lookup_fault),
        });
        let app = axum::Router::new().fallback(server::handle).with_state(Arc::clone(&state));
        let serving = connections::Serving::start(SocketAddr::new(cfg.host, cfg.port), app, cfg.limits).await?;
        Ok(Sandbox { serving, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// `http://127.0.0.1:PORT/api`: both the API and the faucet base URL.
    pub fn base_url(&self) -> Url {
        let host = match self.addr().ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        Url::parse(&format!("http://{host}:{}/api", self.addr().port())).unwrap_or_else(|_| {
            // An IP and a port always form a valid URL.
            Url::parse("http://127.0.0.1/api").unwrap_or_else(|_| std::process::abort())
        })
    }

    /// The books, locked: read them, or change them underneath a client (tests do).
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.state.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change how lookups by idempotency key misbehave, from now on.
    pub fn set_lookup_fault(&self, fault: Option<LookupFault>) {
        *self.state.lookup_fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    pub fn faults(&self) -> &FaultPlan {
        &self.state.faults
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// Stop serving and wait for open connections to close.
    pub async fn shutdown(self) {
        self.serving.shutdown().await
    }
}
