//! The schema of the raw `points` table, shared by every backend.
//!
//! One row per field of a point:
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `time` | timestamp (ns, UTC) | the point's timestamp |
//! | `database` | string | `db`, `bucket`, or the remote_write default |
//! | `measurement` | string | measurement, or the Prometheus metric name |
//! | `series_id` | uint64 | stable hash of the series key |
//! | `series_key` | string | `database/measurement,tag=value,...` (canonical escaping) |
//! | `tags` | map<string, string> | tags (`tags['host']`) |
//! | `field` | string | field key (`value` for remote_write) |
//! | `value` | float64, null | the numeric value as a float (floats, integers, unsigned) |
//! | `value_int` | int64, null | set for integer fields (exact) |
//! | `value_uint` | uint64, null | set for unsigned fields (exact) |
//! | `value_bool` | boolean, null | set for boolean fields |
//! | `value_str` | string, null | set for string fields |
//!
//! Exactly one of `value_int`, `value_uint`, `value_bool`, `value_str` is set for non-float fields;
//! floats are in `value` only.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use yaffle_core::{FieldValue, Point};

/// Name of the raw table in SQL.
pub const POINTS_TABLE: &str = "points";

/// The arrow schema of the `points` table.
pub fn points_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        Field::new("database", DataType::Utf8, false),
        Field::new("measurement", DataType::Utf8, false),
        Field::new("series_id", DataType::UInt64, false),
        Field::new("series_key", DataType::Utf8, false),
        Field::new("tags", tags_type(), false),
        Field::new("field", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("value_uint", DataType::UInt64, true),
        Field::new("value_bool", DataType::Boolean, true),
        Field::new("value_str", DataType::Utf8, true),
    ]))
}

pub(crate) fn tags_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// The map type exactly as [`MapBuilder`] produces it, so written files and the declared schema agree.
pub(crate) fn tags_type() -> DataType {
    tags_builder().finish().data_type().clone()
}

/// Builds `points` rows from points, one row per field.
pub fn points_to_batch<'a>(
    points: impl IntoIterator<Item = &'a Point>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut database = StringBuilder::new();
    let mut measurement = StringBuilder::new();
    let mut series_id = UInt64Builder::new();
    let mut series_key = StringBuilder::new();
    let mut tags = tags_builder();
    let mut field = StringBuilder::new();
    let mut value = Float64Builder::new();
    let mut value_int = Int64Builder::new();
    let mut value_uint = UInt64Builder::new();
    let mut value_bool = BooleanBuilder::new();
    let mut value_str = StringBuilder::new();
    for p in points {
        let key = p.series.to_string();
        for (name, v) in &p.fields {
            time.append_value(p.timestamp);
            database.append_value(p.series.database());
            measurement.append_value(p.series.measurement());
            series_id.append_value(p.series_id.0);
            series_key.append_value(&key);
            for (k, tv) in p.series.tags() {
                tags.keys().append_value(k);
                tags.values().append_value(tv);
            }
            tags.append(true)?;
            field.append_value(name);
            value.append_option(v.as_f64());
            value_int.append_option(if let FieldValue::Integer(i) = v { Some(*i) } else { None });
            value_uint.append_option(if let FieldValue::Unsigned(u) = v { Some(*u) } else { None });
            value_bool.append_option(if let FieldValue::Boolean(b) = v { Some(*b) } else { None });
            value_str.append_option(if let FieldValue::String(s) = v { Some(s.as_str()) } else { None });
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(database.finish()),
        Arc::new(measurement.finish()),
        Arc::new(series_id.finish()),
        Arc::new(series_key.finish()),
        Arc::new(tags.finish()),
        Arc::new(field.finish()),
        Arc::new(value.finish()),
        Arc::new(value_int.finish()),
        Arc::new(value_uint.finish()),
        Arc::new(value_bool.finish()),
        Arc::new(value_str.finish()),
    ];
    RecordBatch::try_new(points_schema(), columns)
}
