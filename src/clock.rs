//! Time, injected. The payout engine reads the time and waits only through a [`Clock`] its caller passes
//! in (as delta-rs injects one into its operations), so a simulation or a test advances time instead of
//! sleeping: a test of a 15-minute in-flight timeout takes milliseconds.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub trait Clock: std::fmt::Debug + Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Wait `d` of this clock's time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when told to, or by the waits asked of it (which return at once).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock { now: Mutex::new(start) }
    }

    pub fn advance(&self, d: chrono::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.advance(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
        Box::pin(std::future::ready(()))
    }
}

/// The machine's clock moved by a fixed offset: a process started as if later (or earlier), as a rerun
/// after a long pause, or a machine whose clock is wrong, would be.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    pub offset: chrono::Duration,
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Environment variable of builds with the `test-hooks` feature: seconds to add to the machine's clock, so
/// that a test runs the binary "later" instead of waiting. A release build has no such variable.
pub const TEST_OFFSET_ENV: &str = "PFSYNC_TEST_CLOCK_OFFSET_SECS";

/// The clock a process runs with: the machine's, or (in a test build) offset by [`TEST_OFFSET_ENV`].
pub fn process_clock() -> std::sync::Arc<dyn Clock> {
    #[cfg(feature = "test-hooks")]
    if let Some(secs) = std::env::var(TEST_OFFSET_ENV).ok().and_then(|v| v.trim().parse::<i64>().ok()) {
        return std::sync::Arc::new(OffsetClock { offset: chrono::Duration::seconds(secs) });
    }
    std::sync::Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_by_its_waits_and_nothing_else() {
        let start = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        c.sleep(Duration::from_secs(900)).await;
        assert_eq!(c.now(), start + chrono::Duration::minutes(15));
        c.advance(chrono::Duration::seconds(1));
        assert_eq!(c.now(), start + chrono::Duration::seconds(901));
    }
}
