//! Log errors. Each knows the HTTP status a write refused by it is answered with, and whether a retry
//! can help.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaffle_core::ErrorStatus;

use crate::cursor::CursorName;

/// Why the log could not do something. Cloneable, so one failed group commit can fail every append in it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Invalid configuration.
    #[error("log configuration: {0}")]
    Config(String),
    /// File-system trouble other than a full disk.
    #[error("log i/o at {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// The disk under the log is full: nothing of the failed appends was kept.
    #[error("no space left on the log's disk at {}: {source}", path.display())]
    NoSpace {
        /// The file written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// An fsync failed: the kernel may have dropped the data it could not write, so the log accepts no
    /// more appends until it is reopened (a restart), which recovers what is really on disk.
    #[error("the log refuses writes since an fsync failed ({cause}); restart Yaffle to reopen it")]
    Poisoned {
        /// What failed, with the file.
        cause: Arc<str>,
    },
    /// A record larger than the log accepts.
    #[error("a record of {size} bytes exceeds log.max_record_bytes ({limit} bytes)")]
    RecordTooLarge {
        /// The record's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A `block` cursor is over its disk budget.
    #[error("the {cursor} sink is {lag} bytes behind, over its disk budget of {budget} bytes; retry later")]
    Backpressure {
        /// The cursor.
        cursor: CursorName,
        /// How far behind it is.
        lag: u64,
        /// Its budget.
        budget: u64,
    },
    /// A position that is no record boundary on disk (before the start of the log).
    #[error("no record at log position {position}: {reason}")]
    BadPosition {
        /// Where.
        position: u64,
        /// Why.
        reason: &'static str,
    },
    /// The log is closing.
    #[error("the log is shutting down")]
    ShuttingDown,
    /// Another process holds the log directory.
    #[error("the log directory is in use by another process (it holds the lock on {}); stop it first", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The log directory was written in another data format.
    #[error("log directory format at {}: {message}", path.display())]
    Format {
        /// The format marker.
        path: PathBuf,
        /// What was found and what to do.
        message: String,
    },
}

impl LogError {
    /// Maps an I/O error on `path`: a full disk becomes [`LogError::NoSpace`].
    pub(crate) fn io(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.as_ref().to_path_buf();
        move |source| {
            if source.kind() == io::ErrorKind::StorageFull {
                LogError::NoSpace { path, source: Arc::new(source) }
            } else {
                LogError::Io { path, source: Arc::new(source) }
            }
        }
    }
}

impl ErrorStatus for LogError {
    fn http_status(&self) -> u16 {
        match self {
            LogError::RecordTooLarge { .. } => 413,
            LogError::NoSpace { .. } => 507,
            LogError::Poisoned { .. } | LogError::Backpressure { .. } | LogError::ShuttingDown => 503,
            _ => 500,
        }
    }

    fn is_retryable(&self) -> bool {
        matches!(
            self,
            LogError::Io { .. }
                | LogError::NoSpace { .. }
                | LogError::Backpressure { .. }
                | LogError::ShuttingDown
                // Another node (or this one, restarted) can take the same write.
                | LogError::Poisoned { .. }
        )
    }
}
