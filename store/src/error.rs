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
    /// Stored state could not be read back.
    #[error("corrupt store state at {path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// The HTTP status an API should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::InvalidQuery(_) => 400,
            _ => 500,
        }
    }

    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::Execution(_))
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.as_ref().display().to_string();
        move |source| StoreError::Io { path, source }
    }
}
