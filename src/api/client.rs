//! The HTTP client: bearer auth, idempotency keys, timeouts, bounded retries with full-jitter backoff, a
//! client-side rate limit and a concurrency limit, and decoding into typed models.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::{Host, Url};

use super::cursor::CursorTrail;
use super::error::ApiError;
use super::idempotency::IdempotencyKey;
use super::models::*;
use super::ratelimit::RateLimiter;
use super::retry::{RetryCause, RetryPolicy, parse_retry_after};
use crate::rng::SplitMix64;
use crate::secret::ApiKey;

pub const DEFAULT_API_URL: &str = "https://purpleflea.com/api";
pub const DEFAULT_FAUCET_URL: &str = "https://faucet.purpleflea.com/api";
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

/// Everything the client needs. `Debug` is safe to log: the key prints as `pf_***`, URLs without
/// credentials (see [`shown`]).
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub faucet_url: Url,
    pub api_key: ApiKey,
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
    /// The provider declares that it honours `Idempotency-Key` (replays a repeat). Only then is a POST
    /// with a key repeated after an ambiguous failure (5xx, a lost answer); against a provider that
    /// ignores keys such a repeat is a second payment. Off unless the provider declares it.
    pub keys_honoured: bool,
}

impl ClientConfig {
    pub fn new(base_url: Url, faucet_url: Url, api_key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url,
            faucet_url,
            api_key,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_limit_rps: None,
            max_concurrency: 16,
            max_body_bytes: 64 << 20,
            keys_honoured: false,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &shown(&self.base_url))
            .field("faucet_url", &shown(&self.faucet_url))
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("keys_honoured", &self.keys_honoured)
            .finish()
    }
}

/// Refuse anything but https, and plain http to a loopback host (the sandbox); refuse a user name or
/// password in the URL. Credentials in a URL leak: into error messages and logs (a URL is shown wherever
/// it goes wrong), and into the request, where the HTTP stack turns them into a Basic `Authorization`
/// header next to the bearer key. The key has one way in (`PURPLEFLEA_API_KEY` / `--api-key-file`).
pub fn check_url(url: &Url) -> Result<(), ApiError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::CredentialsInUrl { url: shown(url) });
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(Host::Ipv4(ip)) => ip.is_loopback(),
                Some(Host::Ipv6(ip)) => ip.is_loopback(),
                Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if loopback { Ok(()) } else { Err(ApiError::InsecureUrl { url: shown(url) }) }
        }
        other => Err(ApiError::BadUrl { url: shown(url), reason: format!("scheme {other:?} is not http(s)") }),
    }
}

/// A URL as it may be shown (errors, logs, `Debug`): any user name and password replaced by `***`.
pub fn shown(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    if clean.set_username("***").is_ok() && clean.set_password(None).is_ok() {
        clean.to_string()
    } else {
        format!("{}://***@{}", url.scheme(), url.host_str().unwrap_or(""))
    }
}

/// Text that was meant to be a URL, as it may be shown when it does not even parse: whatever sits between
/// `scheme://` and the last `@` of the authority is replaced by `***`.
pub fn shown_text(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else { return text.to_string() };
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &rest[at..]),
        None => text.to_string(),
    }
}

/// Which base a request goes to.
#[derive(Debug, Clone, Copy)]
enum Base {
    Api,
    Faucet,
}

/// A Purple Flea client. Cheap to clone; clones share the rate limit and concurrency limit.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    cfg: ClientConfig,
    auth: HeaderValue,
    limiter: Option<RateLimiter>,
    in_flight: Semaphore,
    jitter: Mutex<SplitMix64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("cfg", &self.inner.cfg).finish()
    }
}

/// One attempt's result, before the retry loop decides.
enum Attempt {
    /// The status, the body, and whether the provider said it replayed the answer.
    Done(StatusCode, Vec<u8>, bool),
    Retry {
        cause: RetryCause,
        retry_after: Option<Duration>,
        error: ApiError,
    },
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ApiError> {
        check_url(&cfg.base_url)?;
        check_url(&cfg.faucet_url)?;
        if cfg.max_concurrency == 0 {
            return Err(ApiError::BadSetting("--max-concurrency must be at least 1".into()));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", cfg.api_key.expose_for_header()))
            .map_err(|_| ApiError::Unauthorized)?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            // A redirect could carry the Authorization header somewhere else: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pfsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::BadSetting(format!("the HTTP client cannot be built: {e}")))?;
        let limiter = cfg.rate_limit_rps.and_then(RateLimiter::per_second);
        let in_flight = Semaphore::new(cfg.max_concurrency);
        Ok(Client {
            inner: Arc::new(Inner { http, auth, limiter, in_flight, jitter: Mutex::new(SplitMix64::from_time()), cfg }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    // ---- seed endpoints (POST): each answer says whether the provider replayed it ----

    pub async fn payout(
        &self,
        req: &PayoutRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<PayoutResponse>, ApiError> {
        self.post(Base::Api, &["wallet", "payout"], req, key).await
    }

    pub async fn escrow_create(
        &self,
        req: &EscrowCreateRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<Escrow>, ApiError> {
        self.post(Base::Api, &["escrow", "create"], req, key).await
    }

    pub async fn escrow_release(
        &self,
        escrow_id: &str,
        req: &EscrowActionRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<EscrowActionResponse>, ApiError> {
        self.post(Base::Api, &["escrow", escrow_id, "release"], req, key).await
    }

    pub async fn escrow_dispute(
        &self,
        escrow_id: &str,
        req: &EscrowActionRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<EscrowActionResponse>, ApiError> {
        self.post(Base::Api, &["escrow", escrow_id, "dispute"], req, key).await
    }

    pub async fn faucet_claim(
        &self,
        agent_id: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<FaucetClaimResponse>, ApiError> {
        self.post(Base::Faucet, &["claim"], &FaucetClaimRequest { agent_id: agent_id.to_string() }, key).await
    }

    // ---- ext endpoints (GET) ----

    pub async fn wallet(&self, agent_id: &str) -> Result<Wallet, ApiError> {
        self.get(&["wallet", agent_id], &[]).await
    }

    pub async fn escrow(&self, escrow_id: &str) -> Result<Escrow, ApiError> {
        self.get(&["escrow", escrow_id], &[]).await
    }

    /// One page of a list endpoint; each row decoded on its own (see [`decode_rows`]).
    pub async fn list<T: Listed>(&self, query: &ListQuery) -> Result<Page<T>, ApiError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(l) = query.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(c) = &query.cursor {
            params.push(("cursor", c.clone()));
        }
        if let Some(s) = &query.since {
            params.push((T::SINCE_PARAM, s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        }
        if let Some(k) = &query.idempotency_key {
            params.push(("idempotency_key", k.clone()));
        }
        let raw: RawPage = self.get(&[T::PATH], &params).await?;
        Ok(decode_rows(raw))
    }

    /// Every page of a list endpoint, following `next_cursor` until it is null. A cursor this listing
    /// followed before, or one too long to be a cursor, ends it with [`ApiError::Paging`] instead of the
    /// page that carried it (see [`CursorTrail`]).
    pub fn pages<T: Listed>(&self, query: ListQuery) -> impl Stream<Item = Result<Page<T>, ApiError>> + Send + '_ {
        let start = (Some(query), CursorTrail::default());
        futures::stream::try_unfold(start, move |(state, mut trail)| async move {
            let Some(query) = state else { return Ok(None) };
            let page = self.list::<T>(&query).await?;
            let next = match &page.next_cursor {
                None => None,
                Some(c) => {
                    trail
                        .follow(c)
                        .map_err(|detail| ApiError::Paging { endpoint: format!("GET /{}", T::PATH), detail })?;
                    Some(ListQuery { cursor: Some(c.clone()), ..query.clone() })
                }
            };
            Ok(Some((page, (next, trail))))
        })
    }

    // ---- plumbing ----

    fn url(&self, base: Base, segments: &[&str], params: &[(&str, String)]) -> Result<Url, ApiError> {
        let mut url = match base {
            Base::Api => self.inner.cfg.base_url.clone(),
            Base::Faucet => self.inner.cfg.faucet_url.clone(),
        };
        {
            let base = shown(&url);
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ApiError::BadUrl { url: base, reason: "cannot be a base URL".into() })?;
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

    /// A GET below the base URL, for a provider whose endpoints the typed methods do not cover (the live
    /// services). Repeated on any transient failure.
    pub async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ApiError> {
        self.get(segments, &[]).await
    }

    /// A POST below the base URL without an idempotency key: repeated only when the failure proves it did
    /// not run (a 429, a connection that never opened), never after an ambiguous one.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ApiError> {
        Ok(self.post(Base::Api, segments, body, None).await?.answer)
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str], params: &[(&str, String)]) -> Result<T, ApiError> {
        let url = self.url(Base::Api, segments, params)?;
        Ok(self.execute(Method::GET, url, None, None).await?.answer)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        base: Base,
        segments: &[&str],
        body: &B,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<T>, ApiError> {
        let url = self.url(base, segments, &[])?;
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::InvalidRequest { message: e.to_string() })?;
        self.execute(Method::POST, url, Some(bytes), key).await
    }

    /// Send with retries. A GET, or a POST with an idempotency key the provider honours, is repeated on any
    /// transient failure; any other POST only when the failure proves it was not applied (see
    /// [`RetryCause`]): a key the provider ignores protects nothing.
    async fn execute<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<T>, ApiError> {
        let endpoint = format!("{method} {}", url.path());
        let repeatable = method == Method::GET || (key.is_some() && self.inner.cfg.keys_honoured);
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
                    Err(e @ (ApiError::Decode { .. } | ApiError::Unexpected { .. })) if status.is_success() => {
                        (RetryCause::Unreadable, None, e)
                    }
                    Err(e) => return Err(e),
                },
                Attempt::Retry { cause, retry_after, error } => (cause, retry_after, error),
            };
            if !(repeatable || cause.safe_without_key()) {
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
        let mut req =
            self.inner.http.request(method.clone(), url.clone()).header(AUTHORIZATION, self.inner.auth.clone());
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
                error: ApiError::Transport {
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
                            error: ApiError::TooLarge { endpoint: endpoint.to_string(), limit },
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
            let error = ApiError::RateLimited { endpoint: endpoint.to_string(), attempts: 1 };
            return Attempt::Retry { cause: RetryCause::RateLimited, retry_after, error };
        }
        if status.is_server_error() {
            // The code stays in the message: a provider's 5xx codes (`release_failed`) matter to a person.
            let message =
                error_body(&bytes).map(|b| format!("{}: {}", b.error, b.message)).unwrap_or_else(|| snippet(&bytes));
            let error = ApiError::Server { endpoint: endpoint.to_string(), status: code, message, attempts: 1 };
            return Attempt::Retry { cause: RetryCause::ServerError, retry_after, error };
        }
        if code == 409 && error_body(&bytes).is_some_and(|b| b.error == "idempotency_key_in_use") {
            return Attempt::Retry { cause: RetryCause::KeyInUse, retry_after, error: ApiError::IdempotencyKeyInUse };
        }
        let replayed = resp_replayed && status.is_success();
        Attempt::Done(status, bytes, replayed)
    }

    fn decode<T: DeserializeOwned>(&self, endpoint: &str, status: StatusCode, bytes: &[u8]) -> Result<T, ApiError> {
        let code = status.as_u16();
        if status.is_success() {
            return serde_json::from_slice(bytes).map_err(|e| ApiError::Decode {
                endpoint: endpoint.to_string(),
                status: code,
                detail: e.to_string(),
            });
        }
        match error_body(bytes) {
            Some(b) => Err(ApiError::from_code(endpoint, code, &b.error, b.message)),
            None if code == 401 => Err(ApiError::Unauthorized),
            None => Err(ApiError::Unexpected { endpoint: endpoint.to_string(), status: code, detail: snippet(bytes) }),
        }
    }
}

/// Put the final attempt count (and the give-up reason) into the last error.
fn final_error(error: ApiError, endpoint: &str, attempts: u32, elapsed: Duration, policy: &RetryPolicy) -> ApiError {
    let error = match error {
        ApiError::RateLimited { endpoint, .. } => ApiError::RateLimited { endpoint, attempts },
        ApiError::Server { endpoint, status, message, .. } => ApiError::Server { endpoint, status, message, attempts },
        ApiError::Transport { endpoint, detail, connected, .. } => {
            ApiError::Transport { endpoint, detail, attempts, connected }
        }
        other => other,
    };
    if attempts < policy.max_attempts && !matches!(error, ApiError::IdempotencyKeyInUse) {
        return ApiError::GaveUp { endpoint: endpoint.to_string(), elapsed, attempts, last: error.to_string() };
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
    fn plain_http_only_to_loopback() {
        assert!(check_url(&url("https://purpleflea.com/api")).is_ok());
        assert!(check_url(&url("http://127.0.0.1:8080/api")).is_ok());
        assert!(check_url(&url("http://127.9.0.1/api")).is_ok());
        assert!(check_url(&url("http://[::1]:1/api")).is_ok());
        assert!(check_url(&url("http://localhost:1/api")).is_ok());
        assert!(matches!(check_url(&url("http://purpleflea.com/api")), Err(ApiError::InsecureUrl { .. })));
        assert!(matches!(check_url(&url("http://10.0.0.1/api")), Err(ApiError::InsecureUrl { .. })));
        assert!(matches!(check_url(&url("http://localhost.evil.com/api")), Err(ApiError::InsecureUrl { .. })));
        assert!(matches!(check_url(&url("ftp://x/api")), Err(ApiError::BadUrl { .. })));
    }

    #[test]
    fn ids_cannot_change_the_route() {
        let key = ApiKey::new("pf_test_x", "test").unwrap();
        let c =
            Client::new(ClientConfig::new(url("http://127.0.0.1:1/api/"), url("http://127.0.0.1:1/"), key)).unwrap();
        let u = c.url(Base::Api, &["escrow", "../wallet/x", "release"], &[]).unwrap();
        assert_eq!(u.path(), "/api/escrow/..%2Fwallet%2Fx/release");
        let u = c.url(Base::Faucet, &["claim"], &[("a", "b c".into())]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:1/claim?a=b+c");
    }

    #[test]
    fn credentials_in_a_url_are_refused_and_never_shown() {
        for u in [
            "http://user:s3cret@127.0.0.1:1/api",
            "http://s3cret@127.0.0.1:1/api",
            "https://user:s3cret@purpleflea.com/api",
            "http://user:s3cret@purpleflea.com/api",
            "ftp://user:s3cret@x/api",
        ] {
            let e = check_url(&url(u)).unwrap_err();
            assert!(matches!(e, ApiError::CredentialsInUrl { .. }), "{u}: {e}");
            assert!(!format!("{e} {e:?}").contains("s3cret"), "{u}: {e:?}");
            assert_eq!(e.class(), crate::errors::ErrorClass::Usage);
        }
        assert_eq!(shown(&url("https://u:s3cret@h.example/api?x=1")), "https://***@h.example/api?x=1");
        assert_eq!(shown_text("https://user:s3cret@[::1/api"), "https://***@[::1/api");
        assert_eq!(shown_text("http://a@b:c@host/x@y"), "http://***@host/x@y");
        assert_eq!(shown_text("not a url"), "not a url");

        let key = ApiKey::new("pf_test_x", "test").unwrap();
        let mut cfg = ClientConfig::new(url("http://127.0.0.1:1/api"), url("http://127.0.0.1:1/api"), key);
        cfg.base_url = url("http://user:s3cret@127.0.0.1:1/api");
        assert!(!format!("{cfg:?}").contains("s3cret"), "{cfg:?}");
        assert!(matches!(Client::new(cfg), Err(ApiError::CredentialsInUrl { .. })));
    }

    #[test]
    fn debug_of_client_hides_the_key() {
        let key = ApiKey::new("pf_test_topsecret", "test").unwrap();
        let c =
            Client::new(ClientConfig::new(url("http://127.0.0.1:1/api"), url("http://127.0.0.1:1/api"), key)).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
