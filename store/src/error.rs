//! Store errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing files.
    #[error("store i/o at {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Arrow or Parquet encoding.
    #[error("encoding: {0}")]
    Encoding(String),
    /// The SQL statement is invalid or not allowed (the caller's fault).
    #[error("query: {0}")]
    InvalidQuery(String),
    /// The query failed while running.
    #[error("query execution: {0}")]
    Execution(String),
    /// The configuration does not fit the backend (e.g. the cluster has another shape).
    #[error("store configuration: {0}")]
    Config(String),
    /// The backend cannot be reached, or part of it (a shard) is down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Every replica of some shard is unreachable (ClickHouse code 279); the caller finds out which.
    #[error("a shard is unavailable: {0}")]
    ShardsUnavailable(String),
    /// A query went past one of its [`QueryLimits`](crate::QueryLimits).
    #[error("query refused: {0}")]
    QueryLimit(String),
    /// Stored state could not be read back.
    #[error("corrupt store state at {path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl yaffle_core::ErrorStatus for StoreError {
    fn http_status(&self) -> u16 {
        match self {
            StoreError::InvalidQuery(_) => 400,
            StoreError::QueryLimit(_) => 422,
            StoreError::Unavailable(_) | StoreError::ShardsUnavailable(_) => 503,
            _ => 500,
        }
    }

    fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::Execution(_)
                | StoreError::Unavailable(_)
                | StoreError::ShardsUnavailable(_)
        )
    }
}

impl StoreError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.as_ref().display().to_string();
        move |source| StoreError::Io { path, source }
    }
}
