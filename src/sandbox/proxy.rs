//! The sandbox's faults in front of a real provider: `pfsync sandbox --proxy-to URL` forwards every request
//! to URL and injects the same faults, decided the same way ([`FaultPlan`], [`inject`]), relative to the
//! provider: a 429 or a `500` before is answered here and nothing reaches the provider; a `500` after, a
//! dropped connection or a truncated body come after the provider answered, so the operation ran there.
//!
//! The forwarded request keeps its method, path and query (appended to URL's path), headers (the
//! `Authorization` header included, never logged) and body; the answer keeps the provider's status, headers
//! and body. Hop-by-hop headers are dropped both ways.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use url::Url;

use super::connections::{self, ConnectionLimits};
use super::faults::{Fault, FaultConfig, FaultPlan};
use super::inject;

/// Largest request body forwarded.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Largest answer read from the provider.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A provider that has not answered completely within this is given up on (`504`).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// The provider's base URL; a request's path is appended to its path.
    pub upstream: Url,
    pub faults: FaultConfig,
    pub limits: ConnectionLimits,
    /// How long the provider has to answer a request completely.
    pub upstream_timeout: Duration,
    /// Faults strike POSTs only; reads pass untouched (a client's checks and evidence reads get through
    /// while every money-moving request meets the fault).
    pub posts_only: bool,
}

impl ProxyConfig {
    /// Loopback, a free port, no faults, default limits: what a test wants.
    pub fn for_tests(upstream: Url) -> ProxyConfig {
        ProxyConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            upstream,
            faults: FaultConfig::default(),
            limits: ConnectionLimits {
                header_read_timeout: super::DEFAULT_HEADER_READ_TIMEOUT,
                idle_timeout: super::DEFAULT_IDLE_TIMEOUT,
            },
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            posts_only: false,
        }
    }
}

/// What the proxy did.
#[derive(Debug, Default)]
struct ProxyStats {
    requests: AtomicU64,
    forwarded: AtomicU64,
    faults: AtomicU64,
    upstream_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProxyStatsSnapshot {
    pub requests: u64,
    /// Requests sent on to the provider (whether or not it answered).
    pub forwarded: u64,
    /// Requests that met an injected fault.
    pub faults: u64,
    /// Forwarded requests the provider did not answer (`502`, `504`).
    pub upstream_failures: u64,
}

struct ProxyState {
    upstream: Url,
    http: reqwest::Client,
    faults: FaultPlan,
    stats: ProxyStats,
    posts_only: bool,
}

/// A running proxy. Dropping it stops the server.
pub struct Proxy {
    serving: connections::Serving,
    state: Arc<ProxyState>,
}

impl Proxy {
    /// Bind and serve in the background on the current tokio runtime. The URL is not checked here (see
    /// `crate::http::check_url`); a query or fragment on it is refused.
    pub async fn start(cfg: ProxyConfig) -> std::io::Result<Proxy> {
        cfg.faults.validate().map_err(std::io::Error::other)?;
        if cfg.upstream.query().is_some() || cfg.upstream.fragment().is_some() || cfg.upstream.cannot_be_a_base() {
            return Err(std::io::Error::other("the provider URL must be a base URL, without a query or fragment"));
        }
        // The client sees the provider's redirect as it is, and its Authorization goes nowhere else; no proxy
        // from the environment sees it either.
        let connect = cfg.upstream_timeout.min(Duration::from_secs(10));
        let http = crate::http::client_builder(&cfg.upstream, None, cfg.upstream_timeout, connect)
            .map_err(std::io::Error::other)?
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(ProxyState {
            upstream: cfg.upstream.clone(),
            http,
            faults: FaultPlan::new(cfg.faults.clone()),
            stats: ProxyStats::default(),
            posts_only: cfg.posts_only,
        });
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&state));
        let serving = connections::Serving::start(SocketAddr::new(cfg.host, cfg.port), app, cfg.limits).await?;
        Ok(Proxy { serving, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// `http://127.0.0.1:PORT`: a request to `{base_url}/x` goes to the provider's `{URL}/x`.
    pub fn base_url(&self) -> String {
        match self.addr().ip() {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", self.addr().port()),
            IpAddr::V4(ip) => format!("http://{ip}:{}", self.addr().port()),
        }
    }

    pub fn upstream(&self) -> &Url {
        &self.state.upstream
    }

    pub fn faults(&self) -> &FaultPlan {
        &self.state.faults
    }

    pub fn stats(&self) -> ProxyStatsSnapshot {
        let s = &self.state.stats;
        ProxyStatsSnapshot {
            requests: s.requests.load(Ordering::Relaxed),
            forwarded: s.forwarded.load(Ordering::Relaxed),
            faults: s.faults.load(Ordering::Relaxed),
            upstream_failures: s.upstream_failures.load(Ordering::Relaxed),
        }
    }

    /// Stop serving and wait for open connections to close.
    pub async fn shutdown(self) {
        self.serving.shutdown().await
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1), plus those the HTTP stack sets itself for the new hop (`host`,
/// `content-length`), and any the `Connection` header names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    ];
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if HOP.contains(&n) || n == header::CONTENT_LENGTH.as_str() || named.iter().any(|h| h == n) {
            continue;
        }
        let mut value = value.clone();
        if name == header::AUTHORIZATION {
            value.set_sensitive(true);
        }
        out.append(HeaderName::clone(name), value);
    }
    out
}

/// The provider's URL for a request to `path_and_query`: the path appended to the base URL's path.
fn target(base: &Url, path_and_query: &str) -> Result<Url, url::ParseError> {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    if !path_and_query.starts_with('/') {
        s.push('/');
    }
    s.push_str(path_and_query);
    Url::parse(&s)
}

/// The provider's answer, read completely.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

async fn forward(http: &reqwest::Client, req: reqwest::Request) -> Result<Answer, reqwest::Error> {
    let mut resp = http.execute(req).await?;
    let status = resp.status().as_u16();
    let headers = end_to_end(resp.headers());
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(Answer {
                status: 502,
                headers: HeaderMap::new(),
                body: Bytes::from(format!(
                    r#"{{"error":"bad_gateway","message":"the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes"}}"#
                )),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, headers, body: body.freeze() })
}

/// The proxy's single handler: decide the request's fate, answer the early faults here, forward the rest
/// and damage the provider's answer as the fault says.
async fn handle(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    st.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return inject::json_error(
            413,
            "payload_too_large",
            format!("the proxy forwards request bodies up to {MAX_REQUEST_BYTES} bytes"),
        );
    };
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let key =
        parts.headers.get(crate::http::IDEMPOTENCY_HEADER).and_then(|v| v.to_str().ok()).filter(|k| !k.is_empty());
    let ident = inject::identity(&parts.method, path, query, key, &body);
    let decision = if st.posts_only && parts.method != axum::http::Method::POST {
        crate::sandbox::faults::Decision::default()
    } else {
        inject::decide(&st.faults, &st.stats.faults, path, &ident)
    };
    if let Some(resp) = inject::before(decision.fault) {
        tracing::debug!(method = %parts.method, path, fault = ?decision.fault, "proxy answered without forwarding");
        return resp;
    }
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = match target(&st.upstream, path_and_query) {
        Ok(u) => u,
        Err(e) => return inject::json_error(400, "invalid_request", format!("cannot forward this path: {e}")),
    };
    let mut req = reqwest::Request::new(parts.method.clone(), url);
    *req.headers_mut() = end_to_end(&parts.headers);
    *req.body_mut() = Some(body.into());
    tracing::debug!(method = %parts.method, path, fault = ?decision.fault, "proxy forwards");

    // The provider's call runs in its own task, to the end, even when the client hangs up: as on a real
    // provider, what was sent has happened.
    let st2 = Arc::clone(&st);
    let latency = decision.latency;
    let call = tokio::spawn(async move {
        if let Some(l) = latency {
            tokio::time::sleep(l).await;
        }
        st2.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let answer = forward(&st2.http, req).await;
        if answer.is_err() {
            st2.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
        }
        answer
    });
    let answer = match call.await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) if e.is_timeout() => {
            return inject::json_error(504, "gateway_timeout", format!("the provider did not answer in time: {e}"));
        }
        Ok(Err(e)) => {
            return inject::json_error(502, "bad_gateway", format!("the provider did not answer: {}", chain(&e)));
        }
        Err(_) => return inject::json_error(500, "internal", "the proxy's call task failed"),
    };
    let slow_total =
        if decision.fault == Some(Fault::SlowBody) { st.faults.config().slow_body } else { Duration::ZERO };
    inject::after(answer.status, answer.headers, answer.body, decision.fault, slow_total)
}

/// An error with its causes, `: `-separated (reqwest's own message rarely names the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_path_is_appended_to_the_base_path() {
        let base = Url::parse("http://127.0.0.1:9000/api/v1").unwrap();
        assert_eq!(target(&base, "/stats/pay").unwrap().as_str(), "http://127.0.0.1:9000/api/v1/stats/pay");
        let slash = Url::parse("http://127.0.0.1:9000/api/v1/").unwrap();
        assert_eq!(target(&slash, "/a?b=1&c=%20").unwrap().as_str(), "http://127.0.0.1:9000/api/v1/a?b=1&c=%20");
        let root = Url::parse("https://example.com").unwrap();
        assert_eq!(target(&root, "/x").unwrap().as_str(), "https://example.com/x");
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_and_the_key_goes_on_unshown() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::HOST, HeaderValue::from_static("proxy"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk_live_x"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("idempotency-key", HeaderValue::from_static("k1"));
        let out = end_to_end(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(out.get(header::AUTHORIZATION).unwrap().is_sensitive());
        assert!(!format!("{out:?}").contains("sk_live_x"), "{out:?}");
        assert_eq!(out.get("idempotency-key").unwrap(), "k1");
        assert_eq!(out.get(header::CONTENT_TYPE).unwrap(), "application/json");
    }
}
