//! Progress on long work: a live line on a terminal, silence otherwise (logs carry the summary).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
}

impl Progress {
    /// Shown only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, label: &str) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar, label: label.to_string(), started: Instant::now() }
    }

    pub fn hidden() -> Progress {
        Progress::new(false, "")
    }

    pub fn rows(&self, rows: u64, pages: u64) {
        if let Some(b) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            b.set_message(format!("{}: {rows} rows, {pages} pages, {:.0} rows/s", self.label, rows as f64 / secs));
        }
    }

    pub fn phase(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{}: {what}", self.label));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
