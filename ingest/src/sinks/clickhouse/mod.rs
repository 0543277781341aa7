//! The ClickHouse sink: delivers the log to a ClickHouse cluster, each shard at its own pace.
//!
//! # Per-shard progress
//! One task per shard reads the log (through the `store` cursor's reader, so a `drop_oldest` budget is
//! honoured), keeps the rows whose route maps to its shard and inserts them as blocks, cut by rows,
//! bytes and time. Each shard persists its own position (`<dir>/shard-<i>-of-<n>.json`), so a shard
//! that is down only holds back itself: the others keep inserting, and its rows land when it returns.
//! The log's `store` cursor is the smallest shard position, so the log keeps what the slowest shard
//! still needs.
//!
//! # Exactly once
//! Before a block's first insert attempt, the shard records the log range it was built from
//! (`pending`). A block's bytes are a function of that range alone ([`yaffle_store::clickhouse::Block`]),
//! so every retry, on either replica, after a timeout or after a crash and restart (the range is
//! rebuilt from the log), sends the same block, and ReplicatedMergeTree stores it once. Only then does
//! the position move past the range. Changing the number of shards or the distribution while blocks
//! are pending would change their content: stop ingest, let the sink drain, then change them.

mod config;
mod progress;
mod sink;
#[cfg(test)]
mod tests;

pub use config::ClickHouseSinkConfig;
pub use sink::ClickHouseSink;
