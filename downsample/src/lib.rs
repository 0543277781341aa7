//! Yaffle downsampling: windows, aggregates, rollup rules, workers, replay and backfill.
//!
//! Job (see `shared/design.md`): a consumer group of workers, each owning whole Kafka partitions (or,
//! standalone, reading the durable log's `kafka` cursor), turns points into rollups at configured
//! resolutions, keeps no checkpoint, and rebuilds its open windows after a crash or rebalance by
//! replaying the log from far enough back. Rollup writes are idempotent, so a replay never
//! double-counts.
//!
//! Built so far: [`aggregate`] (count, sum, min, max, first, last, DDSketch) and [`windows`] (event-time
//! windows, watermark, lateness, resuming without re-emitting). The workers, replay and backfill on
//! Kafka are the rest of the Kafka/downsampling issue. This crate may depend on `yaffle-core` and
//! `yaffle-store`, never on ingest.

pub mod aggregate;
pub mod windows;

pub use aggregate::{Aggregate, SketchConfig};
pub use windows::{Rollup, WindowConfig, Windows};
