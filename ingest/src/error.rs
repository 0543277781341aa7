//! Ingest errors. Each knows the HTTP status it is answered with and whether a retry can help.

use yaffle_core::ErrorStatus;
use yaffle_log::LogError;

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
    /// The durable log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A log record's payload is not a batch.
    #[error("log record at position {position} does not decode: {reason}")]
    LogCorrupt {
        /// Where.
        position: u64,
        /// What.
        reason: String,
    },
    /// A sink's persisted state cannot be read.
    #[error("sink state: {0}")]
    SinkState(String),
    /// The process is stopping.
    #[error("shutting down")]
    ShuttingDown,
}

impl ErrorStatus for IngestError {
    fn http_status(&self) -> u16 {
        match self {
            IngestError::Log(e) => e.http_status(),
            IngestError::ShuttingDown => 503,
            _ => 500,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            IngestError::Log(e) => e.is_retryable(),
            IngestError::ShuttingDown | IngestError::Io { .. } => true,
            _ => false,
        }
    }
}

impl IngestError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> IngestError {
        let path = path.as_ref().display().to_string();
        move |source| IngestError::Io { path, source }
    }
}
