//! Yaffle's data model and wire formats, shared by every tier.
//!
//! - [`Point`], [`FieldValue`]: one line of line protocol or one remote_write sample, with typed fields.
//! - [`SeriesKey`], [`SeriesId`]: series identity (database, measurement, sorted tags) and its stable
//!   64-bit hash, computed once at ingest and carried everywhere after.
//! - [`Batch`]: the unit of the durable log and of Kafka messages, with one versioned binary codec.
//! - [`line_protocol`] and [`remote_write`]: the two push formats, parsed without async and with errors
//!   that say where (line, column) and what.
//! - [`strategy`]: the distribution strategies every router uses (shards, partitions, evaluators).
//! - [`ErrorStatus`]: the HTTP status and retryability every crate's error reports.
//! - [`tsbs`]: a generator of TSBS cpu-only shaped data for benchmarks and tests.
//!
//! Guarantees: [`SeriesKey::id`] never changes for a given key (pinned by tests); [`Batch::decode`]
//! returns exactly what [`Batch::encode`] was given and never panics on corrupt input.

pub mod aggregate;
pub mod auth;
pub mod batch;
pub mod error;
mod escape;
pub mod line_protocol;
pub mod point;
pub mod remote_write;
pub mod series;
pub mod strategy;
pub mod tsbs;

pub use aggregate::{Aggregate, Window};
pub use batch::Batch;
pub use error::ErrorStatus;
pub use point::{FieldType, FieldValue, Point};
pub use series::{SeriesId, SeriesKey};
