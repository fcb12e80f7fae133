//! When to try a request again and how long to wait: pure decisions, tested without a network.

use std::time::Duration;

/// Bounds on retrying one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// No new attempt starts once this much time has passed since the first.
    pub max_elapsed: Duration,
    /// Cap of the first backoff window; the window doubles per attempt.
    pub base_delay: Duration,
    /// Largest backoff window.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            max_elapsed: Duration::from_secs(120),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(20),
        }
    }
}

/// Why the last attempt did not settle the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// 429: nothing was executed; always safe to repeat.
    RateLimited,
    /// 409 `idempotency_key_in_use`: the first request with this key is still running.
    KeyInUse,
    /// 5xx: may have been applied (the contract allows a failure after commit).
    ServerError,
    /// The connection could not be opened: the request never left.
    ConnectFailed,
    /// Sent, then the answer was lost or cut short (the connection failed before the body was complete).
    NoAnswer,
    /// A complete answer that cannot be used: a 2xx body that does not follow the contract (a malformed
    /// page, an unreadable success), or a body over the size limit.
    Unreadable,
}

impl RetryCause {
    /// May this be repeated when the request is not idempotent (a POST without a key)? Only when it
    /// provably did nothing; a resend after an unknown outcome could pay twice.
    pub fn safe_without_key(self) -> bool {
        matches!(self, RetryCause::RateLimited | RetryCause::ConnectFailed)
    }

    /// How many times a request may be repeated for this cause, whatever the attempt budget; `None` for
    /// no limit of its own.
    ///
    /// An unreadable answer gets one repeat, never more. The damage may have been on the way (a proxy or
    /// a flaky link cutting a body short: the sandbox's `--fault-malformed`), and one repeat cures that.
    /// Anything else is what the server sends for this request: a GET gets the same bytes again, and a
    /// keyed POST at a provider that honours keys gets its stored answer replayed byte for byte. Repeating
    /// until the attempts run out (8 by default) only multiplies the load, and for a 64 MiB body the
    /// download. The one repeat of a POST is a replay, so it cannot pay twice, and it can resolve the
    /// outcome at once; when it does not, the error is an unknown outcome that the next run resolves by
    /// lookup (`outcome_unknown()`), never a blind resend. A POST that may not be repeated at all (no key,
    /// or a provider that does not honour keys) is not repeated for this cause either.
    pub fn repeat_limit(self) -> Option<u32> {
        match self {
            RetryCause::Unreadable => Some(1),
            _ => None,
        }
    }

    /// May the attempt that ended this way have run at the provider? Not for a 429, a connection that
    /// never opened, or a 409 for a key another request is using; maybe for the rest.
    pub fn may_have_run(self) -> bool {
        !matches!(self, RetryCause::RateLimited | RetryCause::ConnectFailed | RetryCause::KeyInUse)
    }
}

impl RetryPolicy {
    /// Backoff after `failures` failed attempts (1 for the first): full jitter over an exponentially
    /// growing window, and never less than the server's `Retry-After`.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, unit_random: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let window = self.base_delay.saturating_mul(1u32 << exp).min(self.max_delay);
        let jittered = window.mul_f64(unit_random.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra),
            None => jittered,
        }
    }

    /// Should another attempt start? `elapsed` is the time since the first attempt, `wait` the delay
    /// about to be slept.
    pub fn allows(&self, attempts_made: u32, elapsed: Duration, wait: Duration) -> bool {
        attempts_made < self.max_attempts && elapsed.saturating_add(wait) <= self.max_elapsed
    }
}

/// Parse `Retry-After` in seconds (the contract's form); an HTTP date or junk is ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_doubles_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1, None, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, None, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(4, None, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(5, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(99, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(1, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, Some(Duration::from_secs(3)), 0.2), Duration::from_secs(3));
    }

    #[test]
    fn bounds_stop_retrying() {
        let p = RetryPolicy { max_attempts: 3, max_elapsed: Duration::from_secs(10), ..RetryPolicy::default() };
        assert!(p.allows(2, Duration::from_secs(1), Duration::from_secs(1)));
        assert!(!p.allows(3, Duration::from_secs(1), Duration::from_secs(1)));
        assert!(!p.allows(1, Duration::from_secs(9), Duration::from_secs(2)));
    }

    #[test]
    fn only_provably_unapplied_failures_repeat_without_a_key() {
        assert!(RetryCause::RateLimited.safe_without_key());
        assert!(RetryCause::ConnectFailed.safe_without_key());
        assert!(!RetryCause::ServerError.safe_without_key());
        assert!(!RetryCause::NoAnswer.safe_without_key());
        assert!(!RetryCause::KeyInUse.safe_without_key());
        assert!(!RetryCause::Unreadable.safe_without_key());
    }

    #[test]
    fn an_unreadable_answer_is_repeated_once_at_most() {
        assert_eq!(RetryCause::Unreadable.repeat_limit(), Some(1));
        for c in [
            RetryCause::RateLimited,
            RetryCause::KeyInUse,
            RetryCause::ServerError,
            RetryCause::ConnectFailed,
            RetryCause::NoAnswer,
        ] {
            assert_eq!(c.repeat_limit(), None, "{c:?}: bounded by the policy only");
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("99999"), Some(Duration::from_secs(3600)));
    }
}
