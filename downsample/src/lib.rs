//! Yaffle downsampling: windows, aggregates, rollup rules, workers, replay and backfill.
//!
//! Job (see `shared/design.md`): a consumer group of workers, each owning whole Kafka partitions (or,
//! standalone, reading the durable log's `kafka` cursor), turns points into rollups at configured
//! resolutions, keeps no checkpoint, and rebuilds its open windows after a crash or rebalance by
//! replaying the log from far enough back. Rollup writes are idempotent, so a replay never
//! double-counts.
//!
//! Status: not built yet (the Kafka/downsampling issue). The crate exists so the workspace has its final
//! shape and dependency direction: it may depend on `yaffle-core` and `yaffle-store`, never on ingest.
