//! The `rollups` table: one row per (series, field, resolution, window), written by the downsampling
//! workers through [`crate::Store::write_rollups`].
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `time` | timestamp (ns, UTC) | the window's start |
//! | `resolution_s` | uint32 | the window's length in seconds |
//! | `database`, `measurement`, `series_id`, `series_key`, `tags`, `field` | | as in `points` |
//! | `count` | uint64 | numeric values in the window |
//! | `sum`, `min`, `max` | float64 | of those values |
//! | `first`, `last` | float64 | the values with the smallest and largest timestamp |
//! | `first_ns`, `last_ns` | int64 | those timestamps |
//! | `sketch` | string | the quantile sketch (see [`crate::sketch`]: DDSketch, DataDog's binary encoding in base64), empty when sketches are off |
//! | `version` | uint64 | the writer's version of the row: of two rows with one key, the larger wins |
//!
//! **Idempotent writes.** A row's key is (series, field, resolution, window start). Writing a key again
//! replaces it: the embedded store's `rollups` view shows the highest version of each key; ClickHouse's
//! `rollups_local` is a ReplacingMergeTree on `version`, so read it with `FINAL` (or `argMax(..,
//! version)`) to see one row per key before background merges have run. ClickHouse 18.x needs the sort
//! key (`database, measurement, series_id, field, resolution_s, window_start_ns`) and `version` among
//! the columns a `FINAL` query reads.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use yaffle_core::{Aggregate, SeriesId, SeriesKey};

use crate::schema::{tags_builder, tags_type};

/// Name of the rollups table in SQL.
pub const ROLLUPS_TABLE: &str = "rollups";

/// One closed window of a (series, field) at one resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    /// The series.
    pub series: Arc<SeriesKey>,
    /// Its id.
    pub series_id: SeriesId,
    /// The field.
    pub field: Arc<str>,
    /// Window length in seconds.
    pub resolution_s: u32,
    /// Window start, ns since the epoch.
    pub window_start_ns: i64,
    /// Count, sum, min, max, first and last of the window's values.
    pub aggregate: Aggregate,
    /// The quantile sketch as [`crate::sketch::encode`] writes it; empty without one.
    pub sketch: String,
    /// Of two rows with one key, the larger version wins (the downsampler uses the count: a window
    /// rebuilt from more of the log wins, one rebuilt from the same points is the same row).
    pub version: u64,
}

/// The arrow schema of rollup files (and of the `rollups` table).
pub fn rollups_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        Field::new("resolution_s", DataType::UInt32, false),
        Field::new("database", DataType::Utf8, false),
        Field::new("measurement", DataType::Utf8, false),
        Field::new("series_id", DataType::UInt64, false),
        Field::new("series_key", DataType::Utf8, false),
        Field::new("tags", tags_type(), false),
        Field::new("field", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
        Field::new("first", DataType::Float64, false),
        Field::new("last", DataType::Float64, false),
        Field::new("first_ns", DataType::Int64, false),
        Field::new("last_ns", DataType::Int64, false),
        Field::new("sketch", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
    ]))
}

/// Builds rollup rows into a record batch of [`rollups_schema`].
pub fn rollups_to_batch<'a>(
    rows: impl IntoIterator<Item = &'a RollupRow>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut resolution = UInt32Builder::new();
    let (mut database, mut measurement, mut series_key, mut field, mut sketch) =
        (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let (mut series_id, mut count, mut version) = (UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new());
    let mut tags = tags_builder();
    let [mut sum, mut min, mut max, mut first, mut last] = std::array::from_fn(|_| Float64Builder::new());
    let (mut first_ns, mut last_ns) = (Int64Builder::new(), Int64Builder::new());
    for r in rows {
        time.append_value(r.window_start_ns);
        resolution.append_value(r.resolution_s);
        database.append_value(r.series.database());
        measurement.append_value(r.series.measurement());
        series_id.append_value(r.series_id.0);
        series_key.append_value(r.series.to_string());
        for (k, v) in r.series.tags() {
            tags.keys().append_value(k);
            tags.values().append_value(v);
        }
        tags.append(true)?;
        field.append_value(&r.field);
        count.append_value(r.aggregate.count);
        sum.append_value(r.aggregate.sum);
        min.append_value(r.aggregate.min);
        max.append_value(r.aggregate.max);
        first.append_value(r.aggregate.first.1);
        last.append_value(r.aggregate.last.1);
        first_ns.append_value(r.aggregate.first.0);
        last_ns.append_value(r.aggregate.last.0);
        sketch.append_value(&r.sketch);
        version.append_value(r.version);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(resolution.finish()),
        Arc::new(database.finish()),
        Arc::new(measurement.finish()),
        Arc::new(series_id.finish()),
        Arc::new(series_key.finish()),
        Arc::new(tags.finish()),
        Arc::new(field.finish()),
        Arc::new(count.finish()),
        Arc::new(sum.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
        Arc::new(first.finish()),
        Arc::new(last.finish()),
        Arc::new(first_ns.finish()),
        Arc::new(last_ns.finish()),
        Arc::new(sketch.finish()),
        Arc::new(version.finish()),
    ];
    RecordBatch::try_new(rollups_schema(), columns)
}
