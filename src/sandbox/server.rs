//! The HTTP face of the sandbox: auth, routing, idempotency and injected faults around the [`Ledger`].
//! One handler routes by hand so that every endpoint passes through the same auth, fault and idempotency
//! steps in the same order a real payments API would: auth, rate limit, pre-execution faults, idempotency,
//! execution (committed even if the client hangs up), post-commit faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::faults::{Fault, FaultPlan};
use super::idempotency::{Begin, Fingerprint, IdempotencyStore, Stored};
use super::inject;
use super::ledger::{ContractError, Ledger, reason_of};
use crate::http::ErrorBody;
use crate::http::idempotency::MAX_KEY_LEN;
use crate::provider::seed::wire::*;
use crate::secret::ApiKey;

/// Largest request body accepted.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Counters a test or the simulation reads to know what the sandbox did.
#[derive(Debug, Default)]
pub struct SandboxStats {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    /// POSTs that ran against the ledger (not replays, not refused before running).
    pub executed: AtomicU64,
    pub replays: AtomicU64,
    pub faults: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub unauthorized: u64,
    pub executed: u64,
    pub replays: u64,
    pub faults: u64,
}

impl SandboxStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            executed: self.executed.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
        }
    }
}

pub struct SandboxState {
    pub ledger: Mutex<Ledger>,
    pub idempotency: Mutex<IdempotencyStore>,
    pub faults: FaultPlan,
    pub stats: SandboxStats,
    pub api_key: ApiKey,
    /// `/api/admin/...` controls answer only when the sandbox was started with `--admin`.
    pub admin: bool,
    pub ignore_idempotency_keys: bool,
    /// Switchable while serving (tests change it between runs).
    pub lookup_fault: Mutex<Option<super::LookupFault>>,
}

#[derive(Debug)]
enum Route {
    Payout,
    EscrowCreate,
    EscrowSettle { escrow_id: String, to_seller: bool },
    FaucetClaim,
    Wallet(String),
    Escrow(String),
    Wallets,
    Escrows,
    Transactions,
    AdminInsertTx,
    AdminSetBalance(String),
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let r = match (method.as_str(), segs.as_slice()) {
        ("POST", ["api", "wallet", "payout"]) => Route::Payout,
        ("POST", ["api", "escrow", "create"]) => Route::EscrowCreate,
        ("POST", ["api", "escrow", id, "release"]) => {
            Route::EscrowSettle { escrow_id: id.to_string(), to_seller: true }
        }
        ("POST", ["api", "escrow", id, "dispute"]) => {
            Route::EscrowSettle { escrow_id: id.to_string(), to_seller: false }
        }
        ("POST", ["api", "claim"]) => Route::FaucetClaim,
        ("GET", ["api", "wallet", id]) => Route::Wallet(id.to_string()),
        ("GET", ["api", "escrow", id]) => Route::Escrow(id.to_string()),
        ("GET", ["api", "wallets"]) => Route::Wallets,
        ("GET", ["api", "escrows"]) => Route::Escrows,
        ("GET", ["api", "transactions"]) => Route::Transactions,
        ("POST", ["api", "admin", "transactions"]) => Route::AdminInsertTx,
        ("POST", ["api", "admin", "wallets", id, "balance"]) => Route::AdminSetBalance(id.to_string()),
        _ => return None,
    };
    Some(r)
}

fn json_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()))
}

fn error_parts(e: &ContractError) -> (u16, Bytes) {
    (e.status, json_bytes(&ErrorBody { error: e.code.to_string(), message: e.message.clone() }))
}

fn plain(status: u16, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn refuse(e: ContractError) -> Response {
    let (s, b) = error_parts(&e);
    plain(s, b)
}

fn authorized(headers: &HeaderMap, key: &ApiKey) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| key.matches(token.trim()))
}

/// The single entry point of the sandbox's router.
pub async fn handle(State(st): State<Arc<SandboxState>>, req: Request) -> Response {
    st.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    if !authorized(&parts.headers, &st.api_key) {
        st.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return refuse(ContractError::new(401, "unauthorized", "missing or invalid API key"));
    }
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let Some(route) = route(&parts.method, &path) else {
        return refuse(ContractError::new(404, "invalid_request", format!("no endpoint {} {}", parts.method, path)));
    };
    let key = match parts.headers.get(crate::http::IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Some(k.to_string()),
            _ => {
                return refuse(ContractError::invalid(format!(
                    "Idempotency-Key must be 1..={MAX_KEY_LEN} visible characters"
                )));
            }
        },
    };
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(ContractError::invalid(format!("request body is larger than {MAX_REQUEST_BYTES} bytes")));
        }
    };
    if matches!(route, Route::AdminInsertTx | Route::AdminSetBalance(_)) {
        if !st.admin {
            return refuse(ContractError::new(
                404,
                "invalid_request",
                "admin controls are off (start the sandbox with --admin)",
            ));
        }
        let (s, b) = admin(&st, route, &body);
        return plain(s, b);
    }

    let ident = inject::identity(&parts.method, &path, &query, key.as_deref(), &body);
    let decision = inject::decide(&st.faults, &st.stats.faults, &path, &ident);
    if let Some(resp) = inject::before(decision.fault) {
        return resp;
    }

    // A provider without idempotency reads no key: every request executes, none carries one.
    let key = if st.ignore_idempotency_keys && parts.method == Method::POST { None } else { key };
    let (status, bytes, replayed) = if parts.method == Method::POST {
        match execute_post(&st, route, &path, &body, key, decision.latency).await {
            Ok(r) => r,
            Err(resp) => return resp,
        }
    } else {
        if let Some(l) = decision.latency {
            tokio::time::sleep(l).await;
        }
        let (s, b) = read(&st, route, &query);
        (s, b, false)
    };
    let slow_total =
        if decision.fault == Some(Fault::SlowBody) { st.faults.config().slow_body } else { Duration::ZERO };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A damaged answer does not say it is a replay.
    if replayed && decision.fault.is_none() {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    inject::after(status, headers, bytes, decision.fault, slow_total)
}

/// Run a POST under its idempotency key. The ledger work runs in its own task so it commits even when the
/// client disconnects mid-request, as a real server would.
async fn execute_post(
    st: &Arc<SandboxState>,
    route: Route,
    path: &str,
    body: &Bytes,
    key: Option<String>,
    latency: Option<Duration>,
) -> Result<(u16, Bytes, bool), Response> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| refuse(ContractError::invalid(format!("body is not valid JSON: {e}"))))?;
    if let Some(k) = &key {
        let fp = Fingerprint { method: "POST".into(), path: path.to_string(), body: value.clone() };
        let begin = st.idempotency.lock().unwrap_or_else(|p| p.into_inner()).begin(k, fp, Instant::now());
        match begin {
            Begin::Execute => {}
            Begin::Replay(s, b) => {
                st.stats.replays.fetch_add(1, Ordering::Relaxed);
                return Ok((s, b, true));
            }
            Begin::InUse => {
                return Err(refuse(ContractError::new(
                    409,
                    "idempotency_key_in_use",
                    "a request with this key is still running",
                )));
            }
            Begin::Reused => {
                return Err(refuse(ContractError::new(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                )));
            }
        }
    }
    let hold = st.faults.take_hold(path);
    let st2 = Arc::clone(st);
    let body = body.clone();
    let task = tokio::spawn(async move {
        if let Some(h) = hold {
            h.wait_for_release().await;
        }
        if let Some(l) = latency {
            tokio::time::sleep(l).await;
        }
        let (status, bytes) = {
            let mut ledger = st2.ledger.lock().unwrap_or_else(|p| p.into_inner());
            run_operation(&mut ledger, &route, &body, &value, key.as_deref())
        };
        st2.stats.executed.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = &key {
            let stored = Stored { status, body: bytes.clone() };
            st2.idempotency.lock().unwrap_or_else(|p| p.into_inner()).finish(k, stored, Instant::now());
        }
        (status, bytes)
    });
    match task.await {
        Ok((s, b)) => Ok((s, b, false)),
        Err(_) => Err(refuse(ContractError::new(500, "internal", "operation task failed"))),
    }
}

fn run_operation(ledger: &mut Ledger, route: &Route, body: &[u8], value: &Value, key: Option<&str>) -> (u16, Bytes) {
    fn typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ContractError> {
        serde_json::from_slice(body).map_err(|e| ContractError::invalid(e.to_string()))
    }
    let result: Result<Bytes, ContractError> = match route {
        Route::Payout => typed::<PayoutRequest>(body)
            .and_then(|r| ledger.payout(&r.agent_id, r.amount_usd, &r.reason, key))
            .map(|r| json_bytes(&r)),
        Route::EscrowCreate => {
            typed::<EscrowCreateRequest>(body).and_then(|r| ledger.escrow_create(&r, key)).map(|r| json_bytes(&r))
        }
        Route::EscrowSettle { escrow_id, to_seller } => reason_of(value)
            .and_then(|reason| ledger.escrow_settle(escrow_id, reason, *to_seller, key))
            .map(|r| json_bytes(&r)),
        Route::FaucetClaim => typed::<FaucetClaimRequest>(body)
            .and_then(|r| ledger.faucet_claim(&r.agent_id, key))
            .map(|r| json_bytes(&r)),
        _ => Err(ContractError::invalid("not a POST endpoint")),
    };
    match result {
        Ok(b) => (200, b),
        Err(e) => error_parts(&e),
    }
}

#[derive(serde::Deserialize)]
struct AdminTx {
    kind: TxKind,
    agent_id: String,
    counterparty_agent_id: Option<String>,
    amount_usd: crate::money::Usd,
    idempotency_key: Option<String>,
    reference: Option<String>,
}

#[derive(serde::Deserialize)]
struct AdminBalance {
    balance_usd: crate::money::Usd,
}

/// The admin controls (plant discrepancies); see `Ledger::admin_*`.
fn admin(st: &SandboxState, route: Route, body: &[u8]) -> (u16, Bytes) {
    fn typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ContractError> {
        serde_json::from_slice(body).map_err(|e| ContractError::invalid(e.to_string()))
    }
    let mut l = st.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let r: Result<Bytes, ContractError> = match route {
        Route::AdminInsertTx => typed::<AdminTx>(body).and_then(|t| {
            l.admin_insert_tx(
                t.kind,
                &t.agent_id,
                t.counterparty_agent_id.as_deref(),
                t.amount_usd,
                t.idempotency_key.as_deref(),
                t.reference.as_deref().unwrap_or(""),
            )
            .map(|tx| json_bytes(&tx))
        }),
        Route::AdminSetBalance(id) => typed::<AdminBalance>(body)
            .and_then(|b| l.admin_set_balance(&id, b.balance_usd).map(|()| Bytes::from_static(b"{}"))),
        _ => Err(ContractError::invalid("not an admin endpoint")),
    };
    match r {
        Ok(b) => (200, b),
        Err(e) => error_parts(&e),
    }
}

fn parse_list_query(query: &str) -> Result<ListQuery, ContractError> {
    let mut q = ListQuery::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "limit" => {
                q.limit = Some(v.parse().map_err(|_| ContractError::invalid(format!("limit {v:?} is not a number")))?)
            }
            "cursor" => q.cursor = Some(v.into_owned()),
            "updated_since" | "since" => {
                let t = chrono::DateTime::parse_from_rfc3339(&v)
                    .map_err(|_| ContractError::invalid(format!("{k} {v:?} is not an RFC 3339 timestamp")))?;
                q.since = Some(t.with_timezone(&chrono::Utc));
            }
            "idempotency_key" => q.idempotency_key = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(q)
}

#[derive(Serialize)]
struct PageBody<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

fn page_bytes<T: Serialize>(r: Result<(Vec<T>, Option<String>), ContractError>) -> Result<Bytes, ContractError> {
    r.map(|(data, next_cursor)| json_bytes(&PageBody { data, next_cursor }))
}

fn lock_fault(st: &SandboxState) -> std::sync::MutexGuard<'_, Option<super::LookupFault>> {
    st.lookup_fault.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every `amount_usd` of a page made unreadable (a provider bug a client must not mistake for "no rows").
fn garble(page: Bytes) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(&page) else { return page };
    if let Some(rows) = v.get_mut("data").and_then(Value::as_array_mut) {
        for r in rows {
            if let Some(o) = r.as_object_mut() {
                o.insert("amount_usd".into(), Value::String("garbled".into()));
            }
        }
    }
    json_bytes(&v)
}

fn read(st: &SandboxState, route: Route, query: &str) -> (u16, Bytes) {
    let ledger = st.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let result = match route {
        Route::Wallet(id) => ledger.wallet(&id).map(|w| json_bytes(&w)),
        Route::Escrow(id) => ledger.escrow(&id).map(|e| json_bytes(&e)),
        Route::Wallets => parse_list_query(query).and_then(|q| page_bytes(ledger.list_wallets(&q))),
        Route::Escrows => parse_list_query(query).and_then(|q| page_bytes(ledger.list_escrows(&q))),
        Route::Transactions => parse_list_query(query).and_then(|q| match (*lock_fault(st), &q.idempotency_key) {
            (Some(super::LookupFault::IgnoreFilter), Some(_)) => {
                page_bytes(ledger.list_transactions(&ListQuery { idempotency_key: None, ..q }))
            }
            (Some(super::LookupFault::Garble), Some(_)) => page_bytes(ledger.list_transactions(&q)).map(garble),
            _ => page_bytes(ledger.list_transactions(&q)),
        }),
        _ => Err(ContractError::invalid("not a GET endpoint")),
    };
    match result {
        Ok(b) => (200, b),
        Err(e) => error_parts(&e),
    }
}
