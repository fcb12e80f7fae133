//! The servers' clocks as their answers state them: a [`DateProbe`] set on a client records, for each
//! origin, how far the `Date` header of its answers is from this machine's clock. `pfsync doctor` sets one
//! on the provider's clients, so it sees exactly the servers a run talks to, without knowing which they are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::DateTime;
use url::Url;

use crate::clock::Clock;

/// Per origin (`scheme://host:port`), the skew of its latest answer in whole seconds: the server's `Date`
/// minus this machine's time when the answer arrived (positive: this machine is behind).
pub struct DateProbe {
    clock: Arc<dyn Clock>,
    seen: Mutex<BTreeMap<String, i64>>,
}

impl std::fmt::Debug for DateProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DateProbe").field("seen", &self.skews()).finish()
    }
}

impl DateProbe {
    pub fn new(clock: Arc<dyn Clock>) -> DateProbe {
        DateProbe { clock, seen: Mutex::new(BTreeMap::new()) }
    }

    /// An answer from `url` with this `Date` header (answers without one, or with one that is not an HTTP
    /// date, tell nothing).
    pub fn observe(&self, url: &Url, date: Option<&str>) {
        let Some(server) = date.and_then(|d| DateTime::parse_from_rfc2822(d.trim()).ok()) else { return };
        // `Date` has whole seconds, cut down: the server's time was half a second later on average.
        let skew_ms = server.to_utc().signed_duration_since(self.clock.now()).num_milliseconds() + 500;
        let secs = skew_ms / 1000;
        let origin = url.origin().ascii_serialization();
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(origin, secs);
    }

    /// Every origin seen, with its skew.
    pub fn skews(&self) -> Vec<(String, i64)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(o, s)| (o.clone(), *s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn each_origin_keeps_the_skew_of_its_latest_answer() {
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 6, 3, 43, 16).unwrap()));
        let probe = DateProbe::new(clock.clone());
        let casino = Url::parse("http://127.0.0.1:4000/api/v1/auth/balance").unwrap();
        let escrow = Url::parse("http://127.0.0.1:5000/escrow/esc_1").unwrap();
        probe.observe(&casino, Some("Sun, 06 Dec 2026 03:43:16 GMT"));
        probe.observe(&escrow, Some("Sun, 06 Dec 2026 04:43:16 GMT"));
        probe.observe(&escrow, None);
        probe.observe(&escrow, Some("yesterday"));
        assert_eq!(
            probe.skews(),
            [("http://127.0.0.1:4000".to_string(), 0), ("http://127.0.0.1:5000".to_string(), 3600)]
        );
        clock.advance(chrono::Duration::milliseconds(120_900));
        probe.observe(&casino, Some("Sun, 06 Dec 2026 03:43:16 GMT"));
        assert_eq!(probe.skews()[0].1, -120, "this machine is two minutes ahead");
    }
}
