//! A stop requested from outside (SIGTERM, Ctrl-C) for `pfsync run --follow`: the payouts engine starts no
//! new batch once it is set (the batch in flight finishes and its outcomes are logged), and the follow loop
//! exits 0 after the pass it is in.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static STOP: AtomicBool = AtomicBool::new(false);
static WAKE: Notify = Notify::const_new();

pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub fn request() {
    STOP.store(true, Ordering::SeqCst);
    WAKE.notify_waiters();
}

/// Wait up to `d`; returns early (true) when a stop is requested.
pub async fn sleep_unless_stopped(d: std::time::Duration) -> bool {
    if requested() {
        return true;
    }
    let woken = WAKE.notified();
    tokio::select! {
        _ = tokio::time::sleep(d) => requested(),
        _ = woken => true,
    }
}

/// Request a stop on SIGTERM or Ctrl-C (from now on, for this process).
pub fn on_signals() {
    tokio::spawn(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::warn!("stop requested: finishing the batch in flight, then exiting");
        request();
    });
}
