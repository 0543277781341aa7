//! Points and field values.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::series::{SeriesId, SeriesKey};

/// The type of a field, as InfluxDB names them. A (database, measurement, field) keeps the type it was
/// first written with; see the ingest crate's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum FieldType {
    /// 64-bit IEEE float (`1.5`, `1`, `-2e3`).
    Float = 0,
    /// Signed 64-bit integer (`1i`).
    Integer = 1,
    /// Unsigned 64-bit integer (`1u`).
    Unsigned = 2,
    /// Boolean (`t`, `true`, `F`, ...).
    Boolean = 3,
    /// UTF-8 string (`"text"`).
    String = 4,
}

impl FieldType {
    /// The name InfluxDB uses in its messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
        }
    }

    pub(crate) fn from_u8(tag: u8) -> Option<Self> {
        Some(match tag {
            0 => FieldType::Float,
            1 => FieldType::Integer,
            2 => FieldType::Unsigned,
            3 => FieldType::Boolean,
            4 => FieldType::String,
            _ => return None,
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed field value. All line-protocol types are kept as written.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A float.
    Float(f64),
    /// A signed integer.
    Integer(i64),
    /// An unsigned integer.
    Unsigned(u64),
    /// A boolean.
    Boolean(bool),
    /// A string.
    String(String),
}

impl FieldValue {
    /// The value's type.
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Integer(_) => FieldType::Integer,
            FieldValue::Unsigned(_) => FieldType::Unsigned,
            FieldValue::Boolean(_) => FieldType::Boolean,
            FieldValue::String(_) => FieldType::String,
        }
    }

    /// The numeric value as a float, for aggregation: floats, integers and unsigned integers.
    /// Booleans and strings are not numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Float(v) => Some(v),
            FieldValue::Integer(v) => Some(v as f64),
            FieldValue::Unsigned(v) => Some(v as f64),
            FieldValue::Boolean(_) | FieldValue::String(_) => None,
        }
    }
}

/// One point: a series, its fields and a timestamp in nanoseconds since the Unix epoch.
///
/// One line of line protocol is one point; one remote_write sample is one point with the single field
/// [`PROMETHEUS_VALUE_FIELD`].
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The series, shared between points of the same series.
    pub series: Arc<SeriesKey>,
    /// `series.id()`, computed once.
    pub series_id: SeriesId,
    /// Field keys and values, in the order written; keys are unique.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Point {
    /// Builds a point, computing the series id.
    pub fn new(series: Arc<SeriesKey>, fields: Vec<(String, FieldValue)>, timestamp: i64) -> Self {
        let series_id = series.id();
        Self { series, series_id, fields, timestamp }
    }
}

/// The field name remote_write samples are stored under (measurement = metric name), as InfluxDB 1.x does.
pub const PROMETHEUS_VALUE_FIELD: &str = "value";

/// The metric name a field is addressed by in rule expressions: `<measurement>_<field>`, or the bare
/// measurement when the field is [`PROMETHEUS_VALUE_FIELD`] (so remote_write samples keep their names),
/// the convention of Prometheus' influxdb_exporter.
pub fn metric_name(measurement: &str, field: &str) -> String {
    if field == PROMETHEUS_VALUE_FIELD { measurement.to_string() } else { format!("{measurement}_{field}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_influxdb_exporter_convention() {
        assert_eq!(metric_name("cpu", "usage_user"), "cpu_usage_user");
        assert_eq!(metric_name("up", "value"), "up");
    }

    #[test]
    fn numeric_values_convert_to_float() {
        assert_eq!(FieldValue::Unsigned(3).as_f64(), Some(3.0));
        assert_eq!(FieldValue::Boolean(true).as_f64(), None);
    }
}
