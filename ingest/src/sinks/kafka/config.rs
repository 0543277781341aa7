//! Kafka sink configuration.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use yaffle_core::strategy::DistributionConfig;

/// Where and how the Kafka sink produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Whether ingest tees points to Kafka (this turns the log's `kafka` cursor on).
    pub enabled: bool,
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic; created with `partitions` partitions when absent.
    pub topic: String,
    /// Partitions of a topic the sink creates (an existing topic keeps its own count).
    pub partitions: i32,
    /// Replication factor of a topic the sink creates.
    pub replication_factor: i32,
    /// `lz4` or `zstd` (snappy is not offered: the test broker cannot read it back).
    pub compression: Compression,
    /// How points map to partitions: `series` (default), `measurement` or `measurement+tags`. Every
    /// strategy is a series or coarser, so a series always lands in one partition.
    pub distribution: DistributionConfig,
    /// Log bytes read per step; one message per partition per step, split where it would exceed
    /// `max_message_bytes`.
    pub read_bytes: ByteSize,
    /// Largest message value produced (librdkafka `message.max.bytes`): keep it at or under the
    /// broker's `message.max.bytes` (1 MB by default) and the topic's `max.message.bytes`.
    pub max_message_bytes: ByteSize,
    /// librdkafka `linger.ms`: how long the producer waits to fill a request.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long one delivery may take before it is retried.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// First retry delay after a failed delivery; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

/// Message compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// LZ4: fast, the default.
    Lz4,
    /// Zstandard: smaller on the wire.
    Zstd,
}

impl Compression {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            brokers: "127.0.0.1:9092".into(),
            topic: "yaffle-points".into(),
            partitions: 12,
            replication_factor: 1,
            compression: Compression::Lz4,
            distribution: DistributionConfig::default(),
            read_bytes: ByteSize::kib(512),
            max_message_bytes: ByteSize::kb(1000),
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

impl KafkaSinkConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.topic.is_empty() || self.brokers.is_empty() {
            return Err("sinks.kafka.topic and sinks.kafka.brokers must be set".into());
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err("sinks.kafka.partitions and sinks.kafka.replication_factor must be at least 1".into());
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            return Err("sinks.kafka.retry_initial must be positive and at most sinks.kafka.retry_max".into());
        }
        if !(ByteSize::kib(1)..=ByteSize::gib(1)).contains(&self.max_message_bytes) {
            return Err("sinks.kafka.max_message_bytes must be between 1KiB and 1GiB".into());
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            return Err("sinks.kafka.delivery_timeout must be at least 1s".into());
        }
        Ok(())
    }
}
