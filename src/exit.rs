//! The documented exit codes: what happened, and what a scheduler should do about it. A leaf: the CLI prints
//! them in `--help`, and every layer's error class maps to one.

use crate::errors::ErrorClass;

/// Declares `Exit` from one list, so a code cannot be added without its meaning, nor be missing from
/// [`Exit::ALL`] (which `pfsync --help` prints).
macro_rules! exit_codes {
    ($($name:ident = $code:literal: $meaning:literal,)*) => {
        /// Documented exit codes: `pfsync --help` lists every one with its meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Exit {
            $(#[doc = $meaning] $name = $code,)*
        }

        impl Exit {
            /// Every exit code, in order.
            pub const ALL: &'static [Exit] = &[$(Exit::$name),*];

            /// One line: what happened and what a scheduler should do about it.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Exit::$name => $meaning,)*
                }
            }
        }
    };
}

exit_codes! {
    Ok = 0: "success: everything reached a final state",
    Internal = 1: "unexpected internal error (retry, then alert)",
    Usage = 2: "usage or configuration error; nothing was touched (fix it, do not retry)",
    Api = 3: "the Purple Flea API failed after retries or refused the key (retry is safe)",
    Table = 4: "a Delta table could not be read or written: storage, schema (retry is safe)",
    RowsFailed = 5: "finished, but some rows were refused or failed (logged with id and reason)",
    OutcomeUnknown = 6: "some payouts have no known outcome yet; rerun: it resolves them by lookup",
    BrakeHeld = 7: "the safety brake (--max-total-usd, --max-count) held payouts back",
    FindingsOpen = 8: "reconciliation findings of the --fail-on classes are open",
    Stopped = 9: "stopped by SIGTERM or Ctrl-C: the batch in flight finished and was logged, nothing new was sent (rerun to go on)",
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ErrorClass> for Exit {
    fn from(c: ErrorClass) -> Exit {
        match c {
            ErrorClass::Usage => Exit::Usage,
            ErrorClass::Transient | ErrorClass::Refused => Exit::Api,
            ErrorClass::Storage => Exit::Table,
            ErrorClass::Internal => Exit::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn exit_codes_run_from_0_without_gaps_each_with_a_one_line_meaning() {
        for (i, e) in Exit::ALL.iter().enumerate() {
            assert_eq!(e.code() as usize, i, "{e:?}");
            assert!(!e.meaning().is_empty() && !e.meaning().contains('\n'), "{e:?}");
        }
        assert_eq!(Exit::ALL.last(), Some(&Exit::Stopped));
    }
}
