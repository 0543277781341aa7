//! ClickHouse sink configuration.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// ClickHouse's `max_insert_block_size`: a block at most this big is never split by the server, so it
/// is deduplicated as a whole.
const SERVER_BLOCK_ROWS: usize = 1_048_576;

/// How the ClickHouse sink batches and retries, per shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// Longest a row waits before its shard's block is inserted.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A block is inserted as soon as it has this many rows (one row per field; below 1,048,576).
    pub max_rows: usize,
    /// ... or this many bytes.
    pub max_bytes: ByteSize,
    /// Log bytes read per step.
    pub read_bytes: ByteSize,
    /// First retry delay after a shard failed on every replica; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for ClickHouseSinkConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            max_rows: 500_000,
            max_bytes: ByteSize::mib(64),
            read_bytes: ByteSize::mib(8),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
        }
    }
}

impl ClickHouseSinkConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval.is_zero() || self.max_rows == 0 || self.max_bytes.as_u64() == 0 {
            return Err("sinks.clickhouse: flush_interval, max_rows and max_bytes must be positive".into());
        }
        if self.max_rows >= SERVER_BLOCK_ROWS {
            return Err(format!(
                "sinks.clickhouse.max_rows must be below {SERVER_BLOCK_ROWS} (ClickHouse would split the block and \
                 retries could duplicate part of it)"
            ));
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            return Err("sinks.clickhouse.retry_initial must be positive and at most retry_max".into());
        }
        Ok(())
    }
}
