//! Yaffle storage: the [`Store`] trait and its backends.
//!
//! A store keeps raw points (the `points` table) and, once downsampling lands, rollups (the `rollups`
//! table), and answers SQL over them. Backends are chosen by configuration:
//!
//! - [`embedded`] (the default): Parquet files partitioned by time under the data directory, queried with
//!   DataFusion. Single node, no external service.
//!
//! # Guarantees every backend gives
//! - **Exactly once from the log.** [`Store::write_points`] is told the durable-log position its points end
//!   at, and stores that position atomically with the points. [`Store::committed_position`] returns it, so
//!   the store sink resumes after a crash exactly where the stored data ends: nothing is lost and nothing
//!   is written twice, whatever the log cursor said.
//! - **Databases never mix.** The `database` column is part of every row and of the series id.
//! - **Retention drops whole time partitions**, never single rows.
//!
//! The raw table's schema is [`schema::points_schema`]: one row per field of a point.

pub mod embedded;
mod error;
mod query;
pub mod schema;

use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yaffle_core::Point;

pub use error::StoreError;
pub use query::{OutputFormat, QueryResult};

/// A place points are kept and queried.
#[async_trait::async_trait]
pub trait Store: Send + Sync + Debug {
    /// Durably stores `points`, the content of the durable log up to (excluding) `position`, and records
    /// `position` with them. Positions only grow; a call whose `position` is not past
    /// [`Store::committed_position`] is ignored, so replaying the log is harmless.
    async fn write_points(&self, points: &[Point], position: u64) -> Result<(), StoreError>;

    /// The log position up to which points are durably stored (0 for a new store).
    async fn committed_position(&self) -> Result<u64, StoreError>;

    /// Runs one read-only SQL statement over the `points` (and `rollups`) tables.
    async fn query(&self, sql: &str) -> Result<QueryResult, StoreError>;

    /// Drops every time partition that lies entirely before its table's retention; returns how many.
    async fn enforce_retention(&self, now_ns: i64) -> Result<usize, StoreError>;
}

/// Retention per table; `None` keeps data forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// How long raw points are kept, e.g. `"30d"`.
    #[serde(with = "humantime_serde")]
    pub points: Option<Duration>,
    /// How long rollups are kept.
    #[serde(with = "humantime_serde")]
    pub rollups: Option<Duration>,
}
