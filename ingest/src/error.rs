//! Ingest errors. Each knows the HTTP status it is answered with and whether a retry can help.

use crate::log::CursorName;

/// Why ingest could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// File-system trouble.
    #[error("i/o at {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The log writer failed to write.
    #[error("log write failed: {0}")]
    LogWrite(String),
    /// A record could not be read back.
    #[error("log corrupt at position {position}: {reason}")]
    LogCorrupt {
        /// Where.
        position: u64,
        /// What.
        reason: String,
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
    /// A sink's persisted state cannot be read.
    #[error("sink state: {0}")]
    SinkState(String),
    /// The process is stopping.
    #[error("shutting down")]
    ShuttingDown,
}

impl IngestError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Backpressure { .. } | IngestError::ShuttingDown => 503,
            _ => 500,
        }
    }

    /// Whether the same request can succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Backpressure { .. }
                | IngestError::ShuttingDown
                | IngestError::Io { .. }
                | IngestError::LogWrite(_)
        )
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> IngestError {
        let path = path.as_ref().display().to_string();
        move |source| IngestError::Io { path, source }
    }
}
