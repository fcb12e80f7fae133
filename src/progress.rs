//! Progress on long work, where a person or a driver log can read it: on a terminal a bar with counts and
//! rate; without one (a scheduler's log, Databricks' driver log) an info line every `PFSYNC_PROGRESS_SECS`
//! seconds (default 10) with done/total, rate and unknowns. The summary follows at the end either way.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between two progress lines when stderr is not a terminal.
pub const INTERVAL_ENV: &str = "PFSYNC_PROGRESS_SECS";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Counts {
    done: AtomicU64,
    total: AtomicU64,
    unknown: AtomicU64,
    pages: AtomicU64,
    /// Rows (sync) rather than operations (payouts): the words of the line.
    rows: std::sync::atomic::AtomicBool,
    phase: Mutex<Option<String>>,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    counts: Arc<Counts>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// The interval of the log lines: `PFSYNC_PROGRESS_SECS` (a decimal number of seconds), or 10.
fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_INTERVAL)
}

impl Counts {
    fn line(&self, label: &str, elapsed: Duration) -> Option<String> {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
        let phase = self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if self.rows.load(Ordering::Relaxed) {
            let pages = self.pages.load(Ordering::Relaxed);
            return Some(format!("{label}: {done} rows, {pages} pages, {rate:.0} rows/s"));
        }
        if total == 0 {
            return phase.map(|p| format!("{label}: {p}"));
        }
        let unknown = self.unknown.load(Ordering::Relaxed);
        Some(format!("{label}: {done}/{total} operations done, {rate:.1}/s, {unknown} unknown"))
    }
}

impl Progress {
    /// A bar when `enabled` and stderr is a terminal; log lines when `enabled` and it is not.
    pub fn new(enabled: bool, label: &str) -> Progress {
        let counts = Arc::new(Counts::default());
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(label.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let started = Instant::now();
        let ticker = (enabled && !terminal).then(|| tokio::runtime::Handle::try_current().ok()).flatten().map(|rt| {
            let (counts, label, every) = (counts.clone(), label.to_string(), interval());
            rt.spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if let Some(line) = counts.line(&label, started.elapsed()) {
                        tracing::info!(step = %label, "progress {line}");
                    }
                }
            })
        });
        Progress { bar, label: label.to_string(), started, counts, ticker }
    }

    pub fn hidden() -> Progress {
        Progress::new(false, "")
    }

    /// Rows read so far (sync).
    pub fn rows(&self, rows: u64, pages: u64) {
        self.counts.rows.store(true, Ordering::Relaxed);
        self.counts.done.store(rows, Ordering::Relaxed);
        self.counts.pages.store(pages, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            b.set_message(format!("{}: {rows} rows, {pages} pages, {:.0} rows/s", self.label, rows as f64 / secs));
        }
    }

    /// Operations this run will act on (payouts): the bar's length.
    pub fn start(&self, total: u64) {
        self.counts.total.store(total, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_message(self.label.clone());
        }
    }

    /// One operation answered (sent or looked up), `unknown` when its outcome is not known.
    pub fn one_done(&self, unknown: bool) {
        self.counts.done.fetch_add(1, Ordering::Relaxed);
        if unknown {
            self.counts.unknown.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    /// Operations done and unknown after a batch (the count of record: a batch's held operations included).
    pub fn batch_done(&self, done: u64, total: u64, unknown: u64) {
        self.counts.done.store(done, Ordering::Relaxed);
        self.counts.total.store(total.max(done), Ordering::Relaxed);
        self.counts.unknown.store(unknown, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total.max(done));
            b.set_position(done);
            b.set_message(format!("{} ({unknown} unknown)", self.label));
        }
    }

    pub fn phase(&self, what: &str) {
        *self.counts.phase.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.to_string());
        if let Some(b) = &self.bar {
            b.set_message(format!("{}: {what}", self.label));
        }
    }

    pub fn finish(&self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_done_of_total_rate_and_unknowns() {
        let c = Counts::default();
        assert_eq!(c.line("payouts", Duration::from_secs(2)), None, "nothing to say before the plan");
        c.total.store(2000, Ordering::Relaxed);
        c.done.store(500, Ordering::Relaxed);
        c.unknown.store(3, Ordering::Relaxed);
        assert_eq!(
            c.line("payouts", Duration::from_secs(10)).unwrap(),
            "payouts: 500/2000 operations done, 50.0/s, 3 unknown"
        );
    }
}
