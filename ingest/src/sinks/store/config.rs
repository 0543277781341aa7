//! Store sink configuration.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// How the store sink batches and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSinkConfig {
    /// Longest a point waits in the sink before it is written (also how soon it is queryable).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A flush happens as soon as this many points are pending.
    pub max_points: usize,
    /// Log bytes read per step.
    pub read_bytes: ByteSize,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for StoreSinkConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(2),
            max_points: 200_000,
            read_bytes: ByteSize::mib(8),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

impl StoreSinkConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval.is_zero() || self.max_points == 0 {
            return Err("sinks.store.flush_interval and sinks.store.max_points must be positive".into());
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            return Err("sinks.store.retry_initial must be positive and at most sinks.store.retry_max".into());
        }
        Ok(())
    }
}
