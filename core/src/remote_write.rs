//! Prometheus remote_write 1.0 decoding: a snappy-compressed (block format) protobuf `WriteRequest`.
//!
//! Each sample becomes one [`Point`]: the measurement is the metric name (`__name__`), the other labels
//! are tags, and the value is the float field [`PROMETHEUS_VALUE_FIELD`]; timestamps are milliseconds.
//! Requests that carry only metadata (no series) are valid and decode to no points. Exemplars,
//! native histograms and metadata are skipped (prost ignores fields we do not declare).
//!
//! ```
//! use prost::Message;
//! use yaffle_core::remote_write::{decode, Label, Limits, Sample, TimeSeries, WriteRequest};
//!
//! let req = WriteRequest {
//!     timeseries: vec![TimeSeries {
//!         labels: vec![Label { name: "__name__".into(), value: "up".into() }, Label { name: "job".into(), value: "node".into() }],
//!         samples: vec![Sample { value: 1.0, timestamp: 1_700_000_000_000 }],
//!     }],
//! };
//! let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
//! let points = decode(&body, "prometheus", &Limits::default()).unwrap();
//! assert_eq!(points[0].series.measurement(), "up");
//! assert_eq!(points[0].timestamp, 1_700_000_000_000_000_000);
//! ```

use std::sync::Arc;

use bytes::Bytes;

use crate::point::{FieldValue, PROMETHEUS_VALUE_FIELD, Point};
use crate::series::SeriesKey;

/// `prometheus.WriteRequest` (the fields Yaffle reads).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, including `__name__`.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`. Name and value are read as bytes, slices of the decompressed request rather than
/// a `String` each (the series key copies them into one buffer anyway); they are checked to be UTF-8
/// when the series is built.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    /// Label value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value (staleness markers are a special NaN and are kept as written).
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Size limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed protobuf accepted.
    pub max_decompressed_bytes: usize,
    /// Most samples accepted in one request.
    pub max_points: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_decompressed_bytes: 64 << 20, max_points: 1_000_000 }
    }
}

/// Why a remote_write body was refused. The whole request is refused: remote_write has no partial writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteWriteError {
    /// The body is not valid snappy block data.
    #[error("snappy: {0}")]
    Snappy(String),
    /// The decompressed size exceeds the limit.
    #[error("decompressed body of {size} bytes exceeds limits.max_decompressed_bytes ({limit})")]
    TooLarge {
        /// Decompressed size announced by the body.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The protobuf does not decode.
    #[error("protobuf: {0}")]
    Protobuf(String),
    /// A series without a metric name.
    #[error("series {index} has no __name__ label")]
    MissingName {
        /// 0-based index of the series in the request.
        index: usize,
    },
    /// A label name or value that is not UTF-8.
    #[error("series {index} has a label that is not UTF-8")]
    NotUtf8 {
        /// 0-based index of the series.
        index: usize,
    },
    /// A series with the same label name twice.
    #[error("series {index} has label {name:?} twice")]
    DuplicateLabel {
        /// 0-based index of the series.
        index: usize,
        /// The repeated label.
        name: String,
    },
    /// More samples than allowed.
    #[error("request has {count} samples, more than limits.max_points_per_request ({limit})")]
    TooManyPoints {
        /// Samples in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// Decompresses and decodes a remote_write body into points of `database`.
pub fn decode(body: &[u8], database: &str, limits: &Limits) -> Result<Vec<Point>, RemoteWriteError> {
    let size = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if size > limits.max_decompressed_bytes {
        return Err(RemoteWriteError::TooLarge { size, limit: limits.max_decompressed_bytes });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    let request = <WriteRequest as prost::Message>::decode(Bytes::from(raw))
        .map_err(|e| RemoteWriteError::Protobuf(e.to_string()))?;
    to_points(request, database, limits)
}

/// Converts a decoded request into points.
pub fn to_points(request: WriteRequest, database: &str, limits: &Limits) -> Result<Vec<Point>, RemoteWriteError> {
    let count: usize = request.timeseries.iter().map(|s| s.samples.len()).sum();
    if count > limits.max_points {
        return Err(RemoteWriteError::TooManyPoints { count, limit: limits.max_points });
    }
    let mut points = Vec::with_capacity(count);
    for (index, series) in request.timeseries.into_iter().enumerate() {
        let mut name = None;
        let mut tags = Vec::with_capacity(series.labels.len());
        for label in &series.labels {
            let (Ok(n), Ok(v)) = (std::str::from_utf8(&label.name), std::str::from_utf8(&label.value)) else {
                return Err(RemoteWriteError::NotUtf8 { index });
            };
            if n == "__name__" {
                name = Some(v);
            } else {
                tags.push((n, v));
            }
        }
        let name = name.ok_or(RemoteWriteError::MissingName { index })?;
        let key = SeriesKey::from_tags(database, name, tags);
        if let Some(name) = key.duplicate_tag() {
            return Err(RemoteWriteError::DuplicateLabel { index, name: name.to_string() });
        }
        let key = Arc::new(key);
        let id = key.id();
        for s in series.samples {
            points.push(Point {
                series: Arc::clone(&key),
                series_id: id,
                fields: vec![(PROMETHEUS_VALUE_FIELD.to_string(), FieldValue::Float(s.value))],
                timestamp: s.timestamp.saturating_mul(1_000_000),
            });
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn compress(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label { name: n.to_string().into(), value: v.to_string().into() })
                .collect(),
            samples: samples.iter().map(|&(value, timestamp)| Sample { value, timestamp }).collect(),
        }
    }

    #[test]
    fn names_and_labels_are_kept() {
        let req = WriteRequest {
            timeseries: vec![series(
                &[("job", "a"), ("__name__", "http_requests_total"), ("code", "200")],
                &[(1.0, 10), (2.0, 20)],
            )],
        };
        let points = decode(&compress(&req), "prom", &Limits::default()).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].series.to_string(), "prom/http_requests_total,code=200,job=a");
        assert_eq!(points[1].fields, vec![("value".to_string(), FieldValue::Float(2.0))]);
        assert_eq!(points[1].timestamp, 20_000_000);
    }

    #[test]
    fn metadata_only_requests_are_empty() {
        // Field 3 (metadata) is unknown to our message and skipped.
        let mut body = Vec::new();
        prost::encoding::string::encode(3, &"meta".to_string(), &mut body);
        let points = decode(&snap::raw::Encoder::new().compress_vec(&body).unwrap(), "p", &Limits::default()).unwrap();
        assert!(points.is_empty());
    }

    #[test]
    fn limits_and_bad_input_are_reported() {
        let req = WriteRequest { timeseries: vec![series(&[("__name__", "x")], &[(1.0, 1), (2.0, 2)])] };
        let small = Limits { max_points: 1, ..Limits::default() };
        assert_eq!(decode(&compress(&req), "p", &small), Err(RemoteWriteError::TooManyPoints { count: 2, limit: 1 }));
        let tiny = Limits { max_decompressed_bytes: 3, ..Limits::default() };
        assert!(matches!(decode(&compress(&req), "p", &tiny), Err(RemoteWriteError::TooLarge { .. })));
        assert!(matches!(decode(b"not snappy", "p", &Limits::default()), Err(RemoteWriteError::Snappy(_))));
        let nameless = WriteRequest { timeseries: vec![series(&[("a", "b")], &[(1.0, 1)])] };
        assert_eq!(
            decode(&compress(&nameless), "p", &Limits::default()),
            Err(RemoteWriteError::MissingName { index: 0 })
        );
        let mut latin1 = series(&[("__name__", "x")], &[(1.0, 1)]);
        latin1.labels.push(Label { name: "city".into(), value: Bytes::from_static(b"K\xf6ln") });
        let req = WriteRequest { timeseries: vec![series(&[("__name__", "x")], &[(1.0, 1)]), latin1] };
        assert_eq!(decode(&compress(&req), "p", &Limits::default()), Err(RemoteWriteError::NotUtf8 { index: 1 }));
    }
}
