//! A stop requested from outside (SIGTERM, Ctrl-C). A command that moves money or writes in batches
//! ([`Mode::Finish`]) winds down: the payouts engine starts no new batch once a stop is set (the batch in
//! flight finishes and its outcomes are logged), `pfsync run` and `pfsync sync` start no new step, and the
//! command exits 9 (`Exit::Stopped`; `pfsync run --follow` exits 0 after the pass it is in). A second signal,
//! or the first in a command with nothing in flight ([`Mode::Now`]: reads, `init`, `ddl`), ends the process at
//! once with exit 9: every commit pfsync makes is atomic, and the log is what a rerun trusts, so an exit
//! between two commits loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::exit::Exit;

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

/// What a command does on its first SIGTERM or Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Finish the batch in flight, log it, start nothing new.
    Finish,
    /// Nothing to finish: exit at once.
    Now,
}

/// Handle SIGTERM and Ctrl-C from now on, for this process. The handlers are installed before this
/// returns, so a signal that arrives as soon as the work starts is not lost.
pub fn on_signals(mode: Mode) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("cannot handle SIGTERM and Ctrl-C: a signal ends the process at once");
            return;
        };
        tokio::spawn(async move {
            let mut first = true;
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if mode == Mode::Now || !first {
                    eprintln!("pfsync: stopped (exit {})", Exit::Stopped.code());
                    std::process::exit(Exit::Stopped.code() as i32);
                }
                first = false;
                tracing::warn!(
                    "stop requested: finishing the batch in flight and logging its outcomes; nothing new is sent \
                     (a second signal exits at once)"
                );
                request();
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let mut first = true;
        while tokio::signal::ctrl_c().await.is_ok() {
            if mode == Mode::Now || !first {
                std::process::exit(Exit::Stopped.code() as i32);
            }
            first = false;
            tracing::warn!("stop requested: finishing the batch in flight and logging its outcomes");
            request();
        }
    });
}
