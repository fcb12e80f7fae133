//! Client-side pacing: at most `rps` requests started per second, spread evenly, so a large batch does not
//! provoke the provider's own 429s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    /// `None` when `rps` is not a positive finite number (no limit).
    pub fn per_second(rps: f64) -> Option<RateLimiter> {
        if !rps.is_finite() || rps <= 0.0 {
            return None;
        }
        Some(RateLimiter { interval: Duration::from_secs_f64(1.0 / rps), next_slot: Mutex::new(Instant::now()) })
    }

    /// Reserve the next start slot and how long to wait for it.
    fn reserve(&self, now: Instant) -> Duration {
        let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (*next).max(now);
        *next = slot + self.interval;
        slot - now
    }

    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_interval() {
        let rl = RateLimiter::per_second(10.0).unwrap();
        let now = Instant::now() + Duration::from_secs(1);
        assert_eq!(rl.reserve(now), Duration::ZERO);
        assert_eq!(rl.reserve(now), Duration::from_millis(100));
        assert_eq!(rl.reserve(now), Duration::from_millis(200));
        assert!(RateLimiter::per_second(0.0).is_none());
        assert!(RateLimiter::per_second(f64::NAN).is_none());
    }
}
