//! The store sink: delivers the log to the configured [`yaffle_store::Store`] through the `store` cursor.
//!
//! Points are gathered from the log and written in one call per flush: when `max_points` are pending
//! or `flush_interval` has passed since the first pending one. Each write carries the log position it
//! ends at; the store records that position atomically with the data, and the sink resumes from the
//! larger of the store's and the cursor's positions. So a crash at any moment neither loses nor
//! duplicates points. A failing store is retried with exponential backoff; meanwhile only this
//! cursor falls behind, and the log's disk budget for it decides what happens if the outage lasts.

mod config;
mod sink;
#[cfg(test)]
pub(crate) mod tests;

pub use config::StoreSinkConfig;
pub use sink::StoreSink;
