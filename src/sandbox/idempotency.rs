//! The sandbox's idempotency store: the first request with a key runs and its response is kept; a repeat
//! with the same request gets those bytes back; a repeat with another body gets 422; a repeat while the
//! first still runs gets 409.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

/// What a request is, for deciding "same request": method, path and the parsed JSON body (so key order
/// and white space do not matter, values do).
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Debug)]
enum Entry {
    InFlight { fingerprint: Fingerprint, since: Instant },
    Done { fingerprint: Fingerprint, response: Stored, at: Instant },
}

#[derive(Debug, PartialEq)]
pub enum Begin {
    /// First use (or the previous use expired or was abandoned): run it.
    Execute,
    Replay(u16, Bytes),
    InUse,
    Reused,
}

impl PartialEq for Stored {
    fn eq(&self, o: &Stored) -> bool {
        self.status == o.status && self.body == o.body
    }
}

#[derive(Debug)]
pub struct IdempotencyStore {
    entries: HashMap<String, Entry>,
    retention: Duration,
    last_sweep: Instant,
}

impl IdempotencyStore {
    pub fn new(retention: Duration) -> IdempotencyStore {
        IdempotencyStore { entries: HashMap::new(), retention, last_sweep: Instant::now() }
    }

    pub fn begin(&mut self, key: &str, fingerprint: Fingerprint, now: Instant) -> Begin {
        self.sweep(now);
        match self.entries.get(key) {
            Some(Entry::Done { fingerprint: f, response, at }) if now.duration_since(*at) <= self.retention => {
                if *f == fingerprint { Begin::Replay(response.status, response.body.clone()) } else { Begin::Reused }
            }
            Some(Entry::InFlight { fingerprint: f, .. }) => {
                if *f == fingerprint {
                    Begin::InUse
                } else {
                    Begin::Reused
                }
            }
            _ => {
                self.entries.insert(key.to_string(), Entry::InFlight { fingerprint, since: now });
                Begin::Execute
            }
        }
    }

    /// Keep the response of an executed request.
    pub fn finish(&mut self, key: &str, response: Stored, now: Instant) {
        if let Some(Entry::InFlight { fingerprint, .. }) = self.entries.remove(key) {
            self.entries.insert(key.to_string(), Entry::Done { fingerprint, response, at: now });
        }
    }

    /// Forget an in-flight key whose request did not run (so a retry runs it).
    pub fn abandon(&mut self, key: &str) {
        if matches!(self.entries.get(key), Some(Entry::InFlight { .. })) {
            self.entries.remove(key);
        }
    }

    /// Drop expired responses, at most once a second so a busy server does not scan on every request.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let retention = self.retention;
        self.entries.retain(|_, e| match e {
            Entry::Done { at, .. } => now.duration_since(*at) <= retention,
            Entry::InFlight { since, .. } => now.duration_since(*since) <= retention.max(Duration::from_secs(3600)),
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(amount: &str) -> Fingerprint {
        Fingerprint { method: "POST".into(), path: "/api/wallet/payout".into(), body: json!({"amount_usd": amount}) }
    }

    #[test]
    fn lifecycle() {
        let mut s = IdempotencyStore::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(s.begin("k", fp("1"), t0), Begin::Execute);
        assert_eq!(s.begin("k", fp("1"), t0), Begin::InUse);
        assert_eq!(s.begin("k", fp("2"), t0), Begin::Reused);
        s.finish("k", Stored { status: 200, body: Bytes::from_static(b"{\"tx_id\":\"t\"}") }, t0);
        assert_eq!(s.begin("k", fp("1"), t0), Begin::Replay(200, Bytes::from_static(b"{\"tx_id\":\"t\"}")));
        assert_eq!(s.begin("k", fp("2"), t0), Begin::Reused);
        // After the retention the key is free again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(s.begin("k", fp("2"), later), Begin::Execute);
        s.abandon("k");
        assert!(s.is_empty());
    }
}
