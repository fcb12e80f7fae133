//! Named crash points for the kill tests and the simulation. They exist only in builds with the
//! `test-hooks` feature (the tests enable it through a dev-dependency on this crate); in a release build
//! every call below is an empty inline function, so no environment variable can pause or kill a
//! production run.
//!
//! - `PFSYNC_CRASH_AT=POINT[:N]`: the process kills itself (SIGKILL, no unwinding, no flush) the N-th time
//!   (default 1) it reaches POINT, so a seed that picks (POINT, N) reproduces the same crash.
//! - `PFSYNC_PAUSE_AT=POINT`: the process stops at POINT and waits to be killed from outside.
//! - `PFSYNC_SIGNAL_AT=POINT[:N[:int]]`: the process sends itself SIGTERM (SIGINT with `:int`, as Ctrl-C
//!   does) the N-th time it reaches POINT, and goes on: what an operator's stop in the middle of a batch does.

/// Where the payouts engine, or a reconcile run, can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Lookups of unknown outcomes answered, nothing of the batch committed yet.
    AfterLookups,
    /// A batch's intents committed, nothing sent.
    AfterIntents,
    /// One send answered (the N-th of the run); others of the batch may still be in flight.
    MidSend,
    /// Every send of a batch answered, its outcomes not yet committed.
    AfterSend,
    /// A log commit carrying outcomes landed.
    AfterOutcomes,
    /// Reconcile: the implied balances and daily totals of this run committed, its classification not.
    ReconcileAfterTotals,
    /// Reconcile: the classification committed (the run's coverage moved), its findings not written.
    ReconcileAfterState,
}

impl CrashPoint {
    /// The payouts engine's points (the simulation picks among these).
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::AfterLookups,
        CrashPoint::AfterIntents,
        CrashPoint::MidSend,
        CrashPoint::AfterSend,
        CrashPoint::AfterOutcomes,
    ];

    /// A reconcile run's points.
    pub const RECONCILE: [CrashPoint; 2] = [CrashPoint::ReconcileAfterTotals, CrashPoint::ReconcileAfterState];

    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::AfterLookups => "after_lookups",
            CrashPoint::AfterIntents => "after_intents",
            CrashPoint::MidSend => "mid_send",
            CrashPoint::AfterSend => "after_send",
            CrashPoint::AfterOutcomes => "after_outcomes",
            CrashPoint::ReconcileAfterTotals => "reconcile_after_totals",
            CrashPoint::ReconcileAfterState => "reconcile_after_state",
        }
    }

    pub fn parse(s: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().chain(CrashPoint::RECONCILE).find(|p| p.as_str() == s)
    }
}

#[cfg(feature = "test-hooks")]
mod active {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::CrashPoint;

    static HITS: [AtomicU64; CrashPoint::ALL.len() + CrashPoint::RECONCILE.len()] =
        [const { AtomicU64::new(0) }; CrashPoint::ALL.len() + CrashPoint::RECONCILE.len()];
    static PLAN: Mutex<Option<Option<(CrashPoint, u64)>>> = Mutex::new(None);

    fn planned() -> Option<(CrashPoint, u64)> {
        let mut g = PLAN.lock().unwrap_or_else(|p| p.into_inner());
        *g.get_or_insert_with(|| {
            let v = std::env::var("PFSYNC_CRASH_AT").ok()?;
            let (name, n) = match v.split_once(':') {
                Some((name, n)) => (name, n.parse().ok()?),
                None => (v.as_str(), 1),
            };
            Some((CrashPoint::parse(name)?, n))
        })
    }

    pub async fn reached(p: CrashPoint) {
        let idx = CrashPoint::ALL.into_iter().chain(CrashPoint::RECONCILE).position(|x| x == p).unwrap_or(0);
        let n = HITS[idx].fetch_add(1, Ordering::SeqCst) + 1;
        if planned() == Some((p, n)) {
            eprintln!("pfsync: crash point {} #{n} (PFSYNC_CRASH_AT): killing the process", p.as_str());
            // SIGKILL ourselves: what a killed container does, with no destructor or buffered write run.
            // SAFETY: kill(2) on our own pid with a constant signal has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort();
        }
        if let Ok(v) = std::env::var("PFSYNC_SIGNAL_AT") {
            let mut parts = v.split(':');
            let at = parts.next().and_then(CrashPoint::parse);
            let nth: u64 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let sig = if parts.next() == Some("int") { libc::SIGINT } else { libc::SIGTERM };
            if at == Some(p) && nth == n {
                eprintln!("pfsync: crash point {} #{n} (PFSYNC_SIGNAL_AT): signalling the process", p.as_str());
                // SAFETY: kill(2) on our own pid with a constant signal has no memory-safety preconditions.
                unsafe {
                    libc::kill(libc::getpid(), sig);
                }
                // The handler runs on another task: wait until it has seen the signal (as an operator's stop
                // has by the time the next batch would start), so a loaded machine cannot make the test's
                // outcome depend on which task ran first.
                for _ in 0..500 {
                    if crate::stop::requested() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        if std::env::var("PFSYNC_PAUSE_AT").is_ok_and(|v| v == p.as_str()) {
            eprintln!("pfsync: paused at {} (PFSYNC_PAUSE_AT); waiting to be killed", p.as_str());
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        }
    }
}

/// Mark a crash point (a no-op without the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
pub async fn reached(p: CrashPoint) {
    active::reached(p).await
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub async fn reached(_: CrashPoint) {}
