//! The Kafka sink: tees the durable log into a Kafka topic for the downsampling workers.
//!
//! - **Partitioning.** A point's partition is `route % partitions` under the configured distribution
//!   strategy (by series by default), the same function every router uses, so a series always lands
//!   in one partition and one downsampling worker sees all of it.
//! - **Messages.** Each step reads up to `read_bytes` of the log and sends one message per partition
//!   that has points: a [`yaffle_core::Batch`] in the batch codec, timestamped with the ingest time
//!   of the newest log record in it (the time backfill and replay seek by), compressed with lz4 or
//!   zstd by the producer.
//! - **Delivery.** An idempotent producer with `acks=all`. The log's `kafka` cursor moves only past
//!   records whose every message was acknowledged by the broker; a failed message is sent again
//!   (alone) after a backoff. While Kafka is down the cursor simply stays behind (within its disk
//!   budget) and the other sinks carry on; the backlog drains when it returns. A crash between a
//!   delivery and the cursor's commit sends those messages again: delivery is at least once, and
//!   everything downstream is idempotent (rollups by key and version).

mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{Compression, KafkaSinkConfig};
pub use sink::KafkaSink;
