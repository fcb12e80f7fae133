//! Injected faults, reproducible from a seed. Each request's fate is a hash of the seed, the request's
//! identity (method, path, query, idempotency key or body) and how many times that identity was seen, so
//! the same run of requests meets the same faults whatever the thread interleaving.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::rng::{SplitMix64, hash_bytes, mix};

/// Probabilities are per request, in `[0, 1]`; at most one outcome fault hits a request.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    pub seed: u64,
    /// Share of requests delayed, and the delay range.
    pub latency_prob: f64,
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Share answered `429 rate_limited` before anything runs.
    pub rate_limit_prob: f64,
    /// Of those 429s, the share that carries `Retry-After`.
    pub retry_after_prob: f64,
    pub retry_after_secs: u64,
    /// A real limit: more than this many requests in one second get 429 (with `Retry-After: 1`).
    pub max_rps: Option<u32>,
    /// `500 internal` before the operation runs (nothing changes).
    pub error_before_prob: f64,
    /// `500 internal` after the operation committed (the client must not conclude it failed).
    pub error_after_prob: f64,
    /// Connection dropped after the operation committed.
    pub drop_after_prob: f64,
    /// Body trickled out in pieces over `slow_body` in all.
    pub slow_body_prob: f64,
    pub slow_body: Duration,
    /// A truncated, unparseable JSON body with status 200 (for a POST: after the commit).
    pub malformed_prob: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            latency_prob: 0.0,
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            rate_limit_prob: 0.0,
            retry_after_prob: 0.5,
            retry_after_secs: 1,
            max_rps: None,
            error_before_prob: 0.0,
            error_after_prob: 0.0,
            drop_after_prob: 0.0,
            slow_body_prob: 0.0,
            slow_body: Duration::from_millis(300),
            malformed_prob: 0.0,
        }
    }
}

impl FaultConfig {
    /// Every fault at a modest rate: what `pfsync sandbox --chaos` and the simulation use.
    pub fn chaos(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            latency_prob: 0.2,
            rate_limit_prob: 0.05,
            error_before_prob: 0.03,
            error_after_prob: 0.03,
            drop_after_prob: 0.03,
            slow_body_prob: 0.02,
            malformed_prob: 0.02,
            ..FaultConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let probs = [
            ("latency", self.latency_prob),
            ("rate-limit", self.rate_limit_prob),
            ("retry-after", self.retry_after_prob),
            ("error-before", self.error_before_prob),
            ("error-after", self.error_after_prob),
            ("drop-after", self.drop_after_prob),
            ("slow-body", self.slow_body_prob),
            ("malformed", self.malformed_prob),
        ];
        for (name, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("fault probability {name} must be within 0..=1, got {p}"));
            }
        }
        let outcome_sum = self.rate_limit_prob
            + self.error_before_prob
            + self.error_after_prob
            + self.drop_after_prob
            + self.slow_body_prob
            + self.malformed_prob;
        if outcome_sum > 1.0 {
            return Err(format!(
                "fault probabilities (other than latency and retry-after) add up to {outcome_sum}, more than 1"
            ));
        }
        if self.latency_min > self.latency_max {
            return Err("latency min is larger than latency max".into());
        }
        Ok(())
    }

    fn is_quiet(&self) -> bool {
        self.latency_prob == 0.0
            && self.rate_limit_prob == 0.0
            && self.error_before_prob == 0.0
            && self.error_after_prob == 0.0
            && self.drop_after_prob == 0.0
            && self.slow_body_prob == 0.0
            && self.malformed_prob == 0.0
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    RateLimited { retry_after: Option<u64> },
    ErrorBefore,
    ErrorAfter,
    DropAfter,
    SlowBody,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub latency: Option<Duration>,
    pub fault: Option<Fault>,
}

/// A fault scripted by a test for the next request whose path contains `path_contains`.
#[derive(Debug, Clone)]
struct Scripted {
    path_contains: String,
    decision: Decision,
}

/// A request a test holds in flight: it has claimed its idempotency key (if it carries one) and waits,
/// before it runs, until the test releases it. A test then knows a request is in flight without guessing
/// how long a delay keeps it there.
#[derive(Debug, Default)]
pub struct Hold {
    reached: Notify,
    released: Notify,
}

impl Hold {
    /// Returns once the request is held.
    pub async fn reached(&self) {
        self.reached.notified().await
    }

    /// Let the request run.
    pub fn release(&self) {
        self.released.notify_one()
    }

    pub(crate) async fn wait_for_release(&self) {
        self.reached.notify_one();
        self.released.notified().await
    }
}

#[derive(Debug, Default)]
pub struct FaultPlan {
    config: Mutex<FaultConfig>,
    seen: Mutex<HashMap<u64, u64>>,
    script: Mutex<VecDeque<Scripted>>,
    holds: Mutex<VecDeque<(String, Arc<Hold>)>>,
    window: Mutex<(u64, u32)>,
}

impl FaultPlan {
    pub fn new(config: FaultConfig) -> FaultPlan {
        FaultPlan { config: Mutex::new(config), ..FaultPlan::default() }
    }

    pub fn set(&self, config: FaultConfig) {
        *lock(&self.config) = config;
        lock(&self.seen).clear();
    }

    pub fn config(&self) -> FaultConfig {
        lock(&self.config).clone()
    }

    /// Make the next request whose path contains `path_contains` meet `fault` (and `latency`).
    pub fn inject_next(&self, path_contains: &str, fault: Option<Fault>, latency: Option<Duration>) {
        lock(&self.script)
            .push_back(Scripted { path_contains: path_contains.to_string(), decision: Decision { latency, fault } });
    }

    /// Hold the next POST whose path contains `path_contains` in flight until the [`Hold`] is released
    /// (the sandbox's own server; the proxy holds nothing).
    pub fn hold_next(&self, path_contains: &str) -> Arc<Hold> {
        let hold = Arc::new(Hold::default());
        lock(&self.holds).push_back((path_contains.to_string(), Arc::clone(&hold)));
        hold
    }

    /// The hold for a POST to `path` that is about to run, if a test asked for one.
    pub(crate) fn take_hold(&self, path: &str) -> Option<Arc<Hold>> {
        let mut holds = lock(&self.holds);
        let i = holds.iter().position(|(p, _)| path.contains(p.as_str()))?;
        holds.remove(i).map(|(_, h)| h)
    }

    /// Decide the fate of one request. `identity` names the request (see module docs).
    pub fn decide(&self, path: &str, identity: &[u8], now_secs: u64) -> Decision {
        {
            let mut script = lock(&self.script);
            if let Some(i) = script.iter().position(|s| path.contains(&s.path_contains))
                && let Some(s) = script.remove(i)
            {
                return s.decision;
            }
        }
        let cfg = lock(&self.config).clone();
        if let Some(max) = cfg.max_rps {
            let mut w = lock(&self.window);
            if w.0 != now_secs {
                *w = (now_secs, 0);
            }
            w.1 += 1;
            if w.1 > max {
                return Decision { latency: None, fault: Some(Fault::RateLimited { retry_after: Some(1) }) };
            }
        }
        if cfg.is_quiet() {
            return Decision::default();
        }
        let id_hash = hash_bytes(cfg.seed, identity);
        let occurrence = {
            let mut seen = lock(&self.seen);
            let n = seen.entry(id_hash).or_insert(0);
            *n += 1;
            *n
        };
        let mut rng = SplitMix64::new(mix(id_hash ^ occurrence.wrapping_mul(0x2545_F491_4F6C_DD1D)));
        let latency = (rng.next_f64() < cfg.latency_prob).then(|| {
            let lo = cfg.latency_min.as_micros() as u64;
            let hi = cfg.latency_max.as_micros() as u64;
            Duration::from_micros(rng.range(lo, hi))
        });
        let u = rng.next_f64();
        let with_header = rng.next_f64() < cfg.retry_after_prob;
        let table = [
            (cfg.rate_limit_prob, Fault::RateLimited { retry_after: with_header.then_some(cfg.retry_after_secs) }),
            (cfg.error_before_prob, Fault::ErrorBefore),
            (cfg.error_after_prob, Fault::ErrorAfter),
            (cfg.drop_after_prob, Fault::DropAfter),
            (cfg.slow_body_prob, Fault::SlowBody),
            (cfg.malformed_prob, Fault::Malformed),
        ];
        let mut acc = 0.0;
        let mut fault = None;
        for (p, f) in table {
            acc += p;
            if u < acc {
                fault = Some(f);
                break;
            }
        }
        Decision { latency, fault }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults_regardless_of_order() {
        let cfg = FaultConfig::chaos(99);
        let a = FaultPlan::new(cfg.clone());
        let b = FaultPlan::new(cfg);
        let ids: Vec<String> = (0..200).map(|i| format!("POST /wallet/payout key-{i}")).collect();
        let da: Vec<Decision> = ids.iter().map(|i| a.decide("/p", i.as_bytes(), 0)).collect();
        let mut db: Vec<Decision> = ids.iter().rev().map(|i| b.decide("/p", i.as_bytes(), 0)).collect();
        db.reverse();
        assert_eq!(da, db);
        assert!(da.iter().any(|d| d.fault.is_some()));
        assert!(da.iter().any(|d| d.fault.is_none()));
    }

    #[test]
    fn scripted_faults_come_first_and_once() {
        let p = FaultPlan::new(FaultConfig::default());
        p.inject_next("/wallet/payout", Some(Fault::ErrorAfter), None);
        assert_eq!(p.decide("/api/wallets", b"x", 0).fault, None);
        assert_eq!(p.decide("/api/wallet/payout", b"x", 0).fault, Some(Fault::ErrorAfter));
        assert_eq!(p.decide("/api/wallet/payout", b"x", 0).fault, None);
    }

    #[test]
    fn max_rps_limits_per_second() {
        let p = FaultPlan::new(FaultConfig { max_rps: Some(2), ..FaultConfig::default() });
        assert!(p.decide("/", b"a", 5).fault.is_none());
        assert!(p.decide("/", b"b", 5).fault.is_none());
        assert!(matches!(p.decide("/", b"c", 5).fault, Some(Fault::RateLimited { retry_after: Some(1) })));
        assert!(p.decide("/", b"d", 6).fault.is_none());
    }

    #[test]
    fn validation_names_the_bad_probability() {
        let bad = FaultConfig { malformed_prob: 1.5, ..FaultConfig::default() };
        assert!(bad.validate().unwrap_err().contains("malformed"));
        assert!(FaultConfig::chaos(1).validate().is_ok());
    }
}
