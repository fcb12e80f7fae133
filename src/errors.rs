//! The one classification every layer's error answers to. Each module keeps its own typed error enum; it
//! only says which class a failure is, and the exit code follows from the class alone (`app::Exit`).

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
