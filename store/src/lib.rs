//! Yaffle storage: the [`Store`] trait and its backends.
//!
//! A store keeps raw points (the `points` table) and the downsampling workers' rollups (the `rollups`
//! table, see [`rollups`]), and answers SQL over them. Backends are chosen by configuration:
//!
//! - [`embedded`] (the default): Parquet files partitioned by time under the data directory, queried with
//!   DataFusion. Single node, no external service.
//! - [`clickhouse`]: a ClickHouse cluster (shards x replicas): Replicated local tables with Distributed
//!   tables over them, rows placed on shards by the configured distribution strategy.
//!
//! # Guarantees every backend gives
//! - **Exactly once from the log.** The embedded store ([`PositionedStore`]) stores the durable-log position
//!   atomically with the points, so the store sink resumes after a crash exactly where the stored data
//!   ends. The ClickHouse store gets the same outcome per shard from deterministic blocks and
//!   ReplicatedMergeTree insert deduplication (see [`clickhouse`]).
//! - **Databases never mix.** The `database` column is part of every row and of the series id.
//! - **Retention drops whole time partitions**, never single rows.
//!
//! The raw table's schema is [`schema::points_schema`]: one row per field of a point.

pub mod clickhouse;
pub mod embedded;
mod error;
mod query;
pub mod rollups;
pub mod schema;
mod select;
pub mod sketch;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yaffle_core::Point;

pub use error::StoreError;
pub use query::{OutputFormat, QueryLimits, QueryResult};
pub use rollups::RollupRow;
pub use select::{Selected, SelectedSeries, SeriesSelect, name_candidates};
pub use yaffle_core::{Aggregate, Window};

/// A place points are kept and queried: the read side every backend offers.
#[async_trait::async_trait]
pub trait Store: Send + Sync + Debug {
    /// Runs one read-only SQL statement over the `points` (and `rollups`) tables.
    async fn query(&self, sql: &str) -> Result<QueryResult, StoreError>;

    /// Drops every time partition that lies entirely before its table's retention; returns how many.
    async fn enforce_retention(&self, now_ns: i64) -> Result<usize, StoreError>;

    /// Writes rollup rows. Idempotent: a key written again is replaced by the higher version (see
    /// [`rollups`]), so replays and backfills never double-count.
    async fn write_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError>;

    /// Deletes the raw points with `from_ns <= time < to_ns` on `shards` (0-based; every shard when
    /// empty, and ignored by unsharded backends): the first step of rebuilding raw data from the log.
    async fn delete_points(&self, from_ns: i64, to_ns: i64, shards: &[usize]) -> Result<(), StoreError>;

    /// Appends raw points that come from a rebuild rather than the durable log, keeping those placed on
    /// `shards` (all when empty); returns how many points it wrote.
    async fn append_points(&self, points: &[Point], shards: &[usize]) -> Result<u64, StoreError>;

    /// Reads raw samples by series (what PromQL selectors load), selection and time pushed down.
    async fn select_series(&self, select: &SeriesSelect) -> Result<Selected, StoreError>;
}

/// A store that records the durable-log position atomically with the points, so one writer can
/// deliver the log to it exactly once (the embedded store). The ClickHouse store is written per shard
/// instead, see [`clickhouse`].
#[async_trait::async_trait]
pub trait PositionedStore: Store {
    /// Durably stores `points`, the content of the durable log up to (excluding) `position`, and records
    /// `position` with them. Positions only grow; a call whose `position` is not past
    /// [`PositionedStore::committed_position`] is ignored, so replaying the log is harmless.
    async fn write_points(&self, points: &[Point], position: u64) -> Result<(), StoreError>;

    /// The log position up to which points are durably stored (0 for a new store).
    async fn committed_position(&self) -> Result<u64, StoreError>;
}

/// Retention per table; `None` keeps data forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// How long raw points are kept, e.g. `"30d"`.
    #[serde(with = "humantime_serde")]
    pub points: Option<Duration>,
    /// How long rollups are kept, unless their resolution has its own entry in `by_resolution`.
    #[serde(with = "humantime_serde")]
    pub rollups: Option<Duration>,
    /// Rollup retention per resolution, e.g. `{ "1m" = "7d", "1h" = "400d" }`.
    pub by_resolution: BTreeMap<String, humantime_serde::Serde<Duration>>,
}

impl Retention {
    /// The retention of rollups of a resolution.
    pub fn rollups_of(&self, resolution: Duration) -> Option<Duration> {
        self.by_resolution
            .iter()
            .find(|(r, _)| humantime::parse_duration(r).is_ok_and(|r| r == resolution))
            .map(|(_, d)| **d)
            .or(self.rollups)
    }

    /// Checks that every `by_resolution` key is a duration.
    pub fn validate(&self) -> Result<(), String> {
        for r in self.by_resolution.keys() {
            humantime::parse_duration(r)
                .map_err(|e| format!("retention.by_resolution: {r:?} is not a resolution: {e}"))?;
        }
        Ok(())
    }
}
