//! Injected faults as a client meets them on the wire, shared by the sandbox's own server and the proxy in
//! front of a real provider: a request's identity and fate, the answers given before anything runs (429,
//! `500` before), and an answer damaged after the operation ran (`500` after, dropped connection, slow or
//! truncated body).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::faults::{Decision, Fault, FaultPlan};
use crate::http::ErrorBody;

/// The identity a request's fate is drawn from: a retry with the same idempotency key is the same identity,
/// seen once more, so it meets the next fault in that identity's sequence; without a key the body tells
/// requests apart.
pub fn identity(method: &Method, path: &str, query: &str, key: Option<&str>, body: &[u8]) -> String {
    match key {
        Some(k) => format!("{method} {path}?{query} key={k}"),
        None => format!("{method} {path}?{query} body={}", String::from_utf8_lossy(body)),
    }
}

/// The fate of one request, now; `faults` counts those that meet a fault.
pub fn decide(plan: &FaultPlan, faults: &AtomicU64, path: &str, identity: &str) -> Decision {
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let decision = plan.decide(path, identity.as_bytes(), now_secs);
    if decision.fault.is_some() {
        faults.fetch_add(1, Ordering::Relaxed);
    }
    decision
}

/// The answer for a fault that strikes before the operation runs (429, `500` before); `None` lets the
/// request go on.
pub fn before(fault: Option<Fault>) -> Option<Response> {
    match fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut resp = json_error(429, "rate_limited", "slow down");
            if let Some(r) = retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(r));
            }
            Some(resp)
        }
        Some(Fault::ErrorBefore) => Some(json_error(500, "internal", "injected failure before the operation ran")),
        _ => None,
    }
}

/// A JSON error answer `{"error": code, "message": message}`.
pub fn json_error(status: u16, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: code.to_string(), message: message.into() };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response(status, headers, Body::from(bytes))
}

/// Put the operation's answer (`status`, `headers`, `bytes`) on the wire, damaged as the post-commit fault
/// says; with no such fault, as it is. `slow_total` is how long a slow body takes in all.
pub fn after(status: u16, headers: HeaderMap, bytes: Bytes, fault: Option<Fault>, slow_total: Duration) -> Response {
    match fault {
        Some(Fault::ErrorAfter) => json_error(500, "internal", "injected failure after the operation committed"),
        Some(Fault::DropAfter) => {
            // Headers go out, then the body fails: hyper aborts the connection mid-answer.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
            });
            response(200, headers, Body::from_stream(stream))
        }
        Some(Fault::Malformed) => {
            let cut = (bytes.len() / 2).max(1).min(bytes.len());
            let broken = if bytes.is_empty() { Bytes::from_static(b"{") } else { bytes.slice(..cut) };
            response(200, headers, Body::from(broken))
        }
        Some(Fault::SlowBody) => {
            const PIECES: usize = 8;
            let step = bytes.len().div_ceil(PIECES).max(1);
            let chunks: Vec<Bytes> =
                (0..bytes.len()).step_by(step).map(|i| bytes.slice(i..(i + step).min(bytes.len()))).collect();
            let pause = slow_total / PIECES as u32;
            let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
                let next = it.next()?;
                tokio::time::sleep(pause).await;
                Some((Ok::<Bytes, std::io::Error>(next), it))
            });
            response(status, headers, Body::from_stream(stream))
        }
        _ => response(status, headers, Body::from(bytes)),
    }
}

fn response(status: u16, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *resp.headers_mut() = headers;
    resp
}
