//! Sinks: each reads the durable log through its own cursor and delivers at its own pace, on the one
//! sink runtime ([`yaffle_log::sink`]): reading, undecodable records, retries, restarts and health
//! are the runtime's; each sink says only where it starts, what it holds and how it delivers.

pub mod alert;
pub mod clickhouse;
pub mod kafka;
pub mod store;

/// Writes `value` as JSON to `path` atomically ([`yaffle_log::durable::write_atomically`]): a crash
/// leaves the old or the new content, never a torn file, and a completed write survives a power cut.
pub(crate) fn save_json<T: serde::Serialize>(
    path: &std::path::Path,
    value: &T,
) -> Result<(), crate::error::IngestError> {
    let bytes = serde_json::to_vec(value).expect("progress serializes");
    yaffle_log::durable::write_atomically(path, &bytes).map_err(crate::error::IngestError::io(path))
}
