//! A guard against a rebuild that stalls. Under a tight memory limit a rebuild's query was measured to stop
//! making progress without failing: every thread idle, the pipeline waiting on itself (10 million
//! operations, `--memory-limit-mib 1024`). A slow query still spends CPU, a stalled one spends none, so the
//! guard watches the process's CPU time while it waits for a query's next batch, and gives up only after
//! several looks in a row found nothing computed.

use std::future::Future;
use std::time::Duration;

/// How often the guard looks while a rebuild waits for a batch.
pub const LOOK_EVERY: Duration = Duration::from_secs(10);

/// How many looks in a row with (almost) no CPU spent make a stall: two minutes.
pub const IDLE_LOOKS: u32 = 12;

/// `work`'s output, unless the process spends less than 1% of one core over each of `idle_looks` looks in a
/// row while it waits: then `Err` with how long it waited. `cpu` is the process's CPU time so far; `None`
/// (it cannot be read) counts as busy, so an unreadable clock never stops a query.
pub async fn unless_stalled<T>(
    work: impl Future<Output = T>,
    every: Duration,
    idle_looks: u32,
    cpu: impl Fn() -> Option<Duration>,
) -> Result<T, Duration> {
    tokio::pin!(work);
    let (mut idle, mut waited, mut last) = (0u32, Duration::ZERO, cpu());
    loop {
        match tokio::time::timeout(every, &mut work).await {
            Ok(out) => return Ok(out),
            Err(_) => {
                waited += every;
                let now = cpu();
                let spent = match (last, now) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => Duration::MAX,
                };
                idle = if spent < every / 100 { idle + 1 } else { 0 };
                last = now;
                if idle >= idle_looks {
                    return Err(waited);
                }
            }
        }
    }
}

/// This process's CPU time so far, user and system.
pub fn process_cpu() -> Option<Duration> {
    // SAFETY: getrusage only writes into the zeroed struct this function owns.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let time =
        |t: libc::timeval| Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64);
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const EVERY: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn a_wait_with_no_cpu_spent_is_a_stall_and_a_busy_or_unreadable_one_is_not() {
        // Nothing computed while the work waits: a stall after three looks.
        let stalled = unless_stalled(futures::future::pending::<()>(), EVERY, 3, || Some(Duration::from_secs(1))).await;
        assert_eq!(stalled, Err(EVERY * 3));
        // CPU spent at every look: the work is waited for until it ends.
        let spent = AtomicU64::new(0);
        let busy = || Some(Duration::from_millis(spent.fetch_add(50, Ordering::Relaxed)));
        let slow = async {
            tokio::time::sleep(EVERY * 8).await;
            "done"
        };
        assert_eq!(unless_stalled(slow, EVERY, 3, busy).await, Ok("done"));
        // A clock that cannot be read never stops a query.
        let slow = async {
            tokio::time::sleep(EVERY * 8).await;
            "done"
        };
        assert_eq!(unless_stalled(slow, EVERY, 3, || None).await, Ok("done"));
        assert!(process_cpu().is_some());
    }
}
