//! The one classification every layer's error answers to. Each module keeps its own typed error enum; it
//! only says which class a failure is, and the exit code follows from the class alone (`exit::Exit`).

/// What kind of failure an error is, from the point of view of whoever runs pfsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A flag, setting, query or input the user must fix; nothing was touched. Do not retry as is.
    Usage,
    /// The provider could not be reached or kept failing; retrying later is safe.
    Transient,
    /// The provider refused (our key, our request) in a way a retry will not change.
    Refused,
    /// Storage or a table: unreachable, conflicting, or holding something pfsync cannot read.
    Storage,
    /// A bug in pfsync.
    Internal,
}

/// Keep a panic that a dependency catches itself from reaching the terminal.
///
/// delta-rs 1.1 writes a data file through object_store's `BufWriter`; when the file cannot be completed
/// (a read-only table folder, a full disk) it aborts the upload, `BufWriter::abort` panics by design
/// ("Already shut down"), and delta-rs catches that panic and returns the storage error, which pfsync
/// reports as exit 4. The default panic hook has printed the caught panic, with a backtrace, by then: it
/// reads like a crash of pfsync. This hook logs that one panic at debug level and hands every other panic
/// to the previous hook unchanged. Installed once, by `app::run`.
pub fn quiet_caught_dependency_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or_default();
            let message = info.payload_as_str().unwrap_or_default();
            if caught_by_delta_rs(file, message) {
                tracing::debug!(%file, %message, "a dependency panicked and caught it; its error is reported instead");
                return;
            }
            previous(info)
        }));
    });
}

/// The panic of object_store's `BufWriter::abort` after a failed completion, which delta-rs catches.
fn caught_by_delta_rs(file: &str, message: &str) -> bool {
    let file = file.replace('\\', "/");
    file.contains("/object_store-") && file.ends_with("/src/buffered.rs") && message == "Already shut down"
}

#[cfg(test)]
mod tests {
    use super::caught_by_delta_rs;

    #[test]
    fn only_the_caught_abort_panic_is_quieted() {
        let f = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/object_store-0.13.2/src/buffered.rs";
        assert!(caught_by_delta_rs(f, "Already shut down"));
        assert!(!caught_by_delta_rs(f, "index out of bounds"));
        assert!(!caught_by_delta_rs("src/sync/engine.rs", "Already shut down"));
    }
}
