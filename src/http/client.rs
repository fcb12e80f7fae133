//! The HTTP client every provider and service is spoken to through: bearer auth, idempotency keys,
//! timeouts, bounded retries with full-jitter backoff, a client-side rate limit and a concurrency limit,
//! a cap on response bodies, and JSON decoding. What to call and what an answer means is the provider's
//! (`provider::*`); when a request may be repeated is decided here, from the [`Repeat`] rule its provider
//! derives from what it declares.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use url::Url;

use super::error::HttpError;
use super::idempotency::IdempotencyKey;
use super::ratelimit::RateLimiter;
use super::retry::{RetryCause, RetryPolicy, parse_retry_after};
use super::url::{check_url, is_loopback, shown};
use crate::rng::SplitMix64;
use crate::secret::ApiKey;

pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Set to `true` by the provider on an answer it replayed from its idempotency memory.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// A POST's answer, and whether it moved money in this call.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent<T> {
    pub answer: T,
    /// The provider replayed the answer of a request with this key that this call did not make
    /// (`Idempotent-Replayed: true`, and no earlier attempt of this call may have run): the operation ran
    /// before, and this call moved no money. A replay that follows an attempt of this call that may have
    /// run (a 5xx, a lost or unreadable answer) is most likely that attempt's own answer: not a replay.
    pub replayed: bool,
}

/// Every non-2xx body, as the seed's contract and Purple Flea's live services both write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub message: String,
}

/// When the client may send a POST again. A provider derives it from what it declares
/// (`provider::Capabilities::honours_idempotency_keys`); nothing else sets it, so the rule and the
/// declaration cannot disagree. Either way, a POST that may have run is never sent again by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The provider honours keys: a keyed POST answered 409 `idempotency_key_in_use` (another request with
    /// the key is running) is repeated until the provider replays that request's answer.
    KeyedPosts,
    /// A POST is repeated only when the failure proves it never ran (a 429, a connection that never
    /// opened). Against a provider that ignores keys, any other repeat could be a second payment.
    OnlyUnsent,
}

/// Everything the client needs. `Debug` is safe to log: the key prints as `pf_***`, URLs without
/// credentials (see [`shown`]).
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    /// Sent as a bearer token; `None` for a service that takes no key (the live faucet).
    pub api_key: Option<ApiKey>,
    /// Where the key came from, for the message when the server refuses it.
    pub key_origin: String,
    /// Whole-request timeout (connect, send, read the full body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests started per second; `None` for no client-side limit.
    pub rate_limit_rps: Option<f64>,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// A response body larger than this is refused (a hostile or broken server cannot exhaust memory).
    pub max_body_bytes: usize,
    /// A proxy for https requests to hosts other than this machine (`[http] proxy`). The environment's
    /// proxy variables are never read: a proxy sees every request, bearer key included.
    pub proxy: Option<Url>,
}

impl ClientConfig {
    pub fn new(base_url: Url, api_key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url,
            api_key: Some(api_key),
            key_origin: "PURPLEFLEA_API_KEY or --api-key-file".into(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_limit_rps: None,
            max_concurrency: 16,
            max_body_bytes: 64 << 20,
            proxy: None,
        }
    }

    /// The same settings against another base URL.
    pub fn at(&self, base_url: Url) -> ClientConfig {
        ClientConfig { base_url, ..self.clone() }
    }

    /// The longest one request can take, retries included: what bounds a send whose outcome is unknown.
    pub fn send_budget(&self) -> Duration {
        self.timeout.saturating_add(self.retry.max_elapsed)
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &shown(&self.base_url))
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("proxy", &self.proxy.as_ref().map(shown))
            .finish()
    }
}

/// A client of one base URL. Cheap to clone; clones share the rate limit and concurrency limit.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    cfg: ClientConfig,
    repeat: Repeat,
    auth: Option<HeaderValue>,
    limiter: Option<RateLimiter>,
    in_flight: Semaphore,
    jitter: Mutex<SplitMix64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("cfg", &self.inner.cfg).field("repeat", &self.inner.repeat).finish()
    }
}

/// One attempt's result, before the retry loop decides.
enum Attempt {
    /// The status, the body, and whether the provider said it replayed the answer.
    Done(StatusCode, Vec<u8>, bool),
    Retry {
        cause: RetryCause,
        retry_after: Option<Duration>,
        error: HttpError,
    },
}

impl Client {
    pub fn new(cfg: ClientConfig, repeat: Repeat) -> Result<Client, HttpError> {
        check_url(&cfg.base_url)?;
        if cfg.max_concurrency == 0 {
            return Err(HttpError::BadSetting("--max-concurrency must be at least 1".into()));
        }
        let auth = match &cfg.api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose_for_header()))
                    .map_err(|_| HttpError::Unauthorized { what: cfg.key_origin.clone() })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            // A redirect could carry the Authorization header somewhere else: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            // HTTP_PROXY and friends are not read: whoever can set the environment would get the key.
            .no_proxy()
            .user_agent(concat!("pfsync/", env!("CARGO_PKG_VERSION")));
        if let Some(p) = &cfg.proxy
            && cfg.base_url.scheme() == "https"
            && !is_loopback(&cfg.base_url)
        {
            let proxy = reqwest::Proxy::https(p.as_str())
                .map_err(|e| HttpError::BadSetting(format!("[http] proxy {}: {e}", shown(p))))?;
            builder = builder.proxy(proxy);
        }
        let http =
            builder.build().map_err(|e| HttpError::BadSetting(format!("the HTTP client cannot be built: {e}")))?;
        let limiter = cfg.rate_limit_rps.and_then(RateLimiter::per_second);
        let in_flight = Semaphore::new(cfg.max_concurrency);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                auth,
                repeat,
                limiter,
                in_flight,
                jitter: Mutex::new(SplitMix64::from_time()),
                cfg,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// A GET below the base URL, decoded. Repeated on any transient failure.
    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str], params: &[(&str, String)]) -> Result<T, HttpError> {
        let url = self.url(segments, params)?;
        Ok(self.execute(Method::GET, url, None, None).await?.answer)
    }

    /// A GET without query parameters.
    pub async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, HttpError> {
        self.get(segments, &[]).await
    }

    /// A POST below the base URL, under `key` when there is one (see [`Repeat`] for when it is repeated).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<T>, HttpError> {
        let url = self.url(segments, &[])?;
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::BadSetting(format!("a request body: {e}")))?;
        self.execute(Method::POST, url, Some(bytes), key).await
    }

    /// A POST without an idempotency key: repeated only when the failure proves it did not run.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, HttpError> {
        Ok(self.post(segments, body, None).await?.answer)
    }

    fn url(&self, segments: &[&str], params: &[(&str, String)]) -> Result<Url, HttpError> {
        let mut url = self.inner.cfg.base_url.clone();
        {
            let base = shown(&url);
            let mut path = url
                .path_segments_mut()
                .map_err(|_| HttpError::BadUrl { url: base, reason: "cannot be a base URL".into() })?;
            path.pop_if_empty();
            for s in segments {
                // Percent-encoded as one segment: an id like `../x` or `a/b` cannot change the route.
                path.push(s);
            }
        }
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// Send with retries. A GET is repeated on any transient failure. A POST is repeated only when the
    /// failure proves it was not applied (see [`RetryCause`]), and, under a key the provider honours, while
    /// another request with that key is still running (the repeat waits for it and replays its answer):
    /// after a failure that may have run, only the provider's evidence can say whether to send again, and
    /// the engine asks for it. Keys protect against races, never against a resend.
    async fn execute<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<T>, HttpError> {
        let endpoint = format!("{method} {}", url.path());
        let keyed = key.is_some() && self.inner.repeat == Repeat::KeyedPosts;
        let may_repeat = |cause: RetryCause| {
            method == Method::GET || cause.safe_without_key() || (keyed && cause == RetryCause::KeyInUse)
        };
        let policy = &self.inner.cfg.retry;
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut seen: Vec<RetryCause> = Vec::new();
        loop {
            attempts += 1;
            let outcome = self.attempt(&method, &url, body.as_deref(), key, &endpoint).await;
            let (cause, retry_after, error) = match outcome {
                Attempt::Done(status, bytes, replay) => match self.decode::<T>(&endpoint, status, &bytes) {
                    Ok(answer) => {
                        let replayed = replay && !seen.iter().any(|c| c.may_have_run());
                        return Ok(Sent { answer, replayed });
                    }
                    // A success whose body cannot be read: the operation happened. Repeat only when the
                    // repeat is a harmless read or an idempotent replay, and only once (see
                    // `RetryCause::repeat_limit`).
                    Err(e @ (HttpError::Decode { .. } | HttpError::Unexpected { .. })) if status.is_success() => {
                        (RetryCause::Unreadable, None, e)
                    }
                    Err(e) => return Err(e),
                },
                Attempt::Retry { cause, retry_after, error } => (cause, retry_after, error),
            };
            if !may_repeat(cause) {
                return Err(error);
            }
            let repeats = seen.iter().filter(|c| **c == cause).count() as u32;
            if cause.repeat_limit().is_some_and(|limit| repeats >= limit) {
                return Err(error);
            }
            seen.push(cause);
            let unit = self.inner.jitter.lock().map(|mut r| r.next_f64()).unwrap_or(0.5);
            let wait = policy.delay(attempts, retry_after, unit);
            if !policy.allows(attempts, started.elapsed(), wait) {
                return Err(final_error(error, &endpoint, attempts, started.elapsed(), policy));
            }
            tracing::debug!(%endpoint, attempts, ?cause, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        key: Option<&IdempotencyKey>,
        endpoint: &str,
    ) -> Attempt {
        let _permit = self.inner.in_flight.acquire().await;
        if let Some(l) = &self.inner.limiter {
            l.acquire().await;
        }
        let mut req = self.inner.http.request(method.clone(), url.clone());
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(k) = key {
            req = req.header(IDEMPOTENCY_HEADER, k.as_str());
        }
        if let Some(b) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(b.to_vec());
        }
        let transport = |e: reqwest::Error| {
            let cause = if e.is_connect() { RetryCause::ConnectFailed } else { RetryCause::NoAnswer };
            Attempt::Retry {
                cause,
                retry_after: None,
                error: HttpError::Transport {
                    endpoint: endpoint.to_string(),
                    detail: error_chain(&e),
                    attempts: 1,
                    connected: cause != RetryCause::ConnectFailed,
                },
            }
        };
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport(e),
        };
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let resp_replayed = resp
            .headers()
            .get(REPLAYED_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let limit = self.inner.cfg.max_body_bytes;
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > limit {
                        return Attempt::Retry {
                            cause: RetryCause::Unreadable,
                            retry_after: None,
                            error: HttpError::TooLarge { endpoint: endpoint.to_string(), limit },
                        };
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return transport(e),
            }
        }
        let code = status.as_u16();
        if code == 429 {
            let error = HttpError::RateLimited { endpoint: endpoint.to_string(), attempts: 1 };
            return Attempt::Retry { cause: RetryCause::RateLimited, retry_after, error };
        }
        if status.is_server_error() {
            // The code stays in the message: a provider's 5xx codes (`release_failed`) matter to a person.
            let message =
                error_body(&bytes).map(|b| format!("{}: {}", b.error, b.message)).unwrap_or_else(|| snippet(&bytes));
            let error = HttpError::Server { endpoint: endpoint.to_string(), status: code, message, attempts: 1 };
            return Attempt::Retry { cause: RetryCause::ServerError, retry_after, error };
        }
        if code == 409 && error_body(&bytes).is_some_and(|b| b.error == "idempotency_key_in_use") {
            return Attempt::Retry { cause: RetryCause::KeyInUse, retry_after, error: HttpError::KeyInUse };
        }
        let replayed = resp_replayed && status.is_success();
        Attempt::Done(status, bytes, replayed)
    }

    fn decode<T: DeserializeOwned>(&self, endpoint: &str, status: StatusCode, bytes: &[u8]) -> Result<T, HttpError> {
        let code = status.as_u16();
        if status.is_success() {
            return serde_json::from_slice(bytes).map_err(|e| HttpError::Decode {
                endpoint: endpoint.to_string(),
                status: code,
                detail: e.to_string(),
            });
        }
        match error_body(bytes) {
            _ if code == 401 => Err(HttpError::Unauthorized { what: self.inner.cfg.key_origin.clone() }),
            Some(b) => Err(HttpError::Status {
                endpoint: endpoint.to_string(),
                status: code,
                code: b.error,
                message: b.message,
            }),
            None => Err(HttpError::Unexpected { endpoint: endpoint.to_string(), status: code, detail: snippet(bytes) }),
        }
    }
}

/// Put the final attempt count (and the give-up reason) into the last error.
fn final_error(error: HttpError, endpoint: &str, attempts: u32, elapsed: Duration, policy: &RetryPolicy) -> HttpError {
    let error = match error {
        HttpError::RateLimited { endpoint, .. } => HttpError::RateLimited { endpoint, attempts },
        HttpError::Server { endpoint, status, message, .. } => {
            HttpError::Server { endpoint, status, message, attempts }
        }
        HttpError::Transport { endpoint, detail, connected, .. } => {
            HttpError::Transport { endpoint, detail, attempts, connected }
        }
        other => other,
    };
    if attempts < policy.max_attempts && !matches!(error, HttpError::KeyInUse) {
        return HttpError::GaveUp { endpoint: endpoint.to_string(), elapsed, attempts, last: error.to_string() };
    }
    error
}

fn error_body(bytes: &[u8]) -> Option<ErrorBody> {
    serde_json::from_slice::<ErrorBody>(bytes).ok()
}

/// The start of a body for an error message; a body can be megabytes of garbage.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let mut s: String = text.chars().filter(|c| !c.is_control()).collect();
    if bytes.len() > 200 {
        s.push_str("...");
    }
    s
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn ids_cannot_change_the_route() {
        let key = ApiKey::new("pf_test_x", "test").unwrap();
        let c = Client::new(ClientConfig::new(url("http://127.0.0.1:1/api/"), key), Repeat::OnlyUnsent).unwrap();
        let u = c.url(&["escrow", "../wallet/x", "release"], &[]).unwrap();
        assert_eq!(u.path(), "/api/escrow/..%2Fwallet%2Fx/release");
        let c = Client::new(c.config().at(url("http://127.0.0.1:1/")), Repeat::OnlyUnsent).unwrap();
        let u = c.url(&["claim"], &[("a", "b c".into())]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:1/claim?a=b+c");
    }

    #[test]
    fn credentials_in_the_base_url_are_refused_and_never_shown() {
        let key = ApiKey::new("pf_test_x", "test").unwrap();
        let mut cfg = ClientConfig::new(url("http://127.0.0.1:1/api"), key);
        cfg.base_url = url("http://user:s3cret@127.0.0.1:1/api");
        assert!(!format!("{cfg:?}").contains("s3cret"), "{cfg:?}");
        assert!(matches!(Client::new(cfg, Repeat::OnlyUnsent), Err(HttpError::CredentialsInUrl { .. })));
    }

    #[test]
    fn debug_of_client_hides_the_key() {
        let key = ApiKey::new("pf_test_topsecret", "test").unwrap();
        let c = Client::new(ClientConfig::new(url("http://127.0.0.1:1/api"), key), Repeat::KeyedPosts).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
