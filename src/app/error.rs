//! How a command ends when it does not succeed, and the exit code of each way.

use crate::config::ConfigError;
use crate::exit::Exit;
use crate::maintain::MaintainError;
use crate::payouts::PayoutError;
use crate::reconcile::ReconcileError;
use crate::sync::SyncError;
use crate::tables::TableError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(
        "{failed} row(s) were newly refused or failed (see the warnings above for ids and reasons); every other row \
         went through as the summary says"
    )]
    RowsFailed { failed: u64 },
    #[error(
        "{deferred} rule(s) were not decided in this run (--rules-max-secs or --rules-max-pages; see the warnings \
         above): the next run decides them, the other rules went through"
    )]
    RulesDeferred { deferred: u64 },
    #[error(transparent)]
    Maintain(#[from] MaintainError),
    #[error(transparent)]
    Payout(#[from] PayoutError),
    /// `detail`: which operations wait and from when a rerun acts on them (`payouts::waiting`).
    #[error(
        "{unknown} operation(s) have no known outcome yet: {detail} (nothing is paid twice); `pfsync resolve` lists \
         those that wait for a person"
    )]
    OutcomeUnknown { unknown: u64, detail: String },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// A person's decision that cannot be recorded as asked (`pfsync resolve`).
    #[error("refused: {0}")]
    Refused(#[from] crate::payouts::resolve::Refusal),
    #[error("{open} reconciliation finding(s) open; see the report or the purpleflea.payouts.open_findings view")]
    FindingsOpen { open: u64 },
    #[error("the safety brake held back {held} operation(s); raise --max-total-usd / --max-count or check the source")]
    BrakeHeld { held: u64 },
    #[cfg(feature = "unity")]
    #[error(transparent)]
    Unity(#[from] crate::tables::unity::UnityError),
    /// `pfsync doctor`: checks failed (each printed above); the first one's exit code.
    #[error("{failed} check(s) failed (see above)")]
    ChecksFailed { failed: u64, exit: Exit },
    /// A stop asked from outside (SIGTERM, Ctrl-C): what finished and what the next run picks up.
    #[error("stopped by SIGTERM or Ctrl-C: {detail}")]
    Stopped { detail: String },
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The exit code: from the failing layer's error class, or from how a finished step ended.
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Config(_) | AppError::Usage(_) | AppError::Refused(_) => Exit::Usage,
            AppError::Provider(e) => e.class().into(),
            AppError::Table(e) => e.class().into(),
            AppError::Sync(e) => e.class().into(),
            AppError::Maintain(e) => e.class().into(),
            AppError::Payout(e) => e.class().into(),
            AppError::Reconcile(e) => e.class().into(),
            AppError::RowsFailed { .. } | AppError::RulesDeferred { .. } => Exit::RowsFailed,
            AppError::OutcomeUnknown { .. } => Exit::OutcomeUnknown,
            AppError::BrakeHeld { .. } => Exit::BrakeHeld,
            AppError::FindingsOpen { .. } => Exit::FindingsOpen,
            // The catalog unreachable: retry; a name it does not know, or a bad setting: fix first.
            #[cfg(feature = "unity")]
            AppError::Unity(crate::tables::unity::UnityError::Request { .. }) => Exit::Table,
            #[cfg(feature = "unity")]
            AppError::Unity(_) => Exit::Usage,
            AppError::ChecksFailed { exit, .. } => *exit,
            AppError::Stopped { .. } => Exit::Stopped,
            AppError::Internal(_) => Exit::Internal,
        }
    }
}
