//! How far a server's clock is from ours, measured from the `Date` header of its answers: the server
//! wrote it between our send and our receipt of the answer, to the whole second. The live provider's
//! ledger is judged by the times the provider wrote, against the times pfsync logged its intents; a
//! measured difference larger than the allowance stops that comparison.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// One measurement: the server's clock minus ours, give or take `uncertainty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    pub offset: Duration,
    pub uncertainty: Duration,
}

impl ClockOffset {
    /// From a `Date` header (RFC 7231: `Sun, 06 Dec 2026 05:04:56 GMT`) and when we sent and received.
    pub fn measure(date: &str, sent: DateTime<Utc>, received: DateTime<Utc>) -> Option<ClockOffset> {
        let server = DateTime::parse_from_rfc2822(date.trim()).ok()?.with_timezone(&Utc);
        let half = (received - sent) / 2;
        // The header is truncated to the second: the server's time was up to a second later.
        let offset = server - (sent + half) + Duration::milliseconds(500);
        Some(ClockOffset { offset, uncertainty: half + Duration::milliseconds(500) })
    }

    /// The least the clocks can differ by, in whole seconds (0 when the measurement cannot tell).
    pub fn at_least_secs(&self) -> i64 {
        (self.offset.abs() - self.uncertainty).num_seconds().max(0)
    }
}

/// The latest measurement, shared by the clones of a client.
#[derive(Debug, Default)]
pub struct OffsetCell(Mutex<Option<ClockOffset>>);

impl OffsetCell {
    pub fn record(&self, m: ClockOffset) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(m);
        }
    }

    pub fn get(&self) -> Option<ClockOffset> {
        self.0.lock().ok().and_then(|g| *g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_a_minute_behind_is_measured_within_the_round_trip() {
        let sent = DateTime::parse_from_rfc3339("2026-12-06T05:05:56.200Z").unwrap().with_timezone(&Utc);
        let received = sent + Duration::milliseconds(400);
        let m = ClockOffset::measure("Sun, 06 Dec 2026 05:04:56 GMT", sent, received).unwrap();
        assert!(m.offset < Duration::seconds(-59) && m.offset > Duration::seconds(-61), "{m:?}");
        assert_eq!(m.at_least_secs(), 59);
        let same = ClockOffset::measure("Sun, 06 Dec 2026 05:05:56 GMT", sent, received).unwrap();
        assert_eq!(same.at_least_secs(), 0);
        assert!(ClockOffset::measure("yesterday", sent, received).is_none());
    }
}
