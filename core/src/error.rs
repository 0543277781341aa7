//! What every Yaffle error tells its callers: the HTTP status it is answered with, and whether the same
//! request or delivery can succeed later. HTTP handlers and the sinks' retry logic read only this.

/// The status and retryability of an error.
pub trait ErrorStatus: std::error::Error {
    /// The HTTP status a request failing with this error is answered with.
    fn http_status(&self) -> u16;

    /// Whether retrying the same request or delivery can succeed.
    fn is_retryable(&self) -> bool;
}
