//! Yaffle downsampling: windows, aggregates, workers, replay and backfill.
//!
//! Job (see `shared/design.md`): a consumer group of workers, each owning whole Kafka partitions (or,
//! standalone, reading the durable log's `kafka` cursor), turns points into rollups at configured
//! resolutions, keeps no checkpoint, and rebuilds its open windows after a crash or rebalance by
//! replaying the log from far enough back ([`kafka`] states the contract). Rollup writes are
//! idempotent, so a replay never double-counts.
//!
//! - [`aggregate`]: count, sum, min, max, first, last, DDSketch.
//! - [`windows`]: event-time windows, watermark, lateness, resuming without re-emitting.
//! - [`engine`]: the windows of the owned partitions and the rows waiting to be written.
//! - [`kafka`]: the consumer-group worker (`yaffle downsample`).
//! - [`log`]: standalone mode's downsampling on the durable log, on the sink runtime.
//! - [`backfill`]: replaying a time range outside the group, into rollups or raw points.
//!
//! This crate depends on `yaffle-core`, `yaffle-log` and `yaffle-store`.

pub mod aggregate;
pub mod backfill;
pub mod config;
pub mod engine;
pub mod kafka;
pub mod log;
mod metrics;
pub mod windows;

pub use aggregate::{Aggregate, SketchConfig};
pub use config::DownsampleConfig;
pub use engine::Engine;
pub use metrics::Metrics;
pub use windows::{Rollup, WindowConfig, Windows};
