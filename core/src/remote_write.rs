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

use bytes::{Buf, Bytes};
use prost::Message;
use prost::encoding::{self, DecodeContext, WireType};

use crate::error::ErrorStatus;
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

/// Size limits applied while decoding. Every one is checked as the body is decoded, before anything
/// bigger than one label is materialised, so a hostile body costs at most its decompressed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed protobuf accepted.
    pub max_decompressed_bytes: usize,
    /// Most samples accepted in one request.
    pub max_points: usize,
    /// Most series accepted in one request.
    pub max_series: usize,
    /// Most labels on one series besides `__name__` (the tags the series gets).
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value (the metric name included), in bytes.
    pub max_label_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 << 20,
            max_points: 1_000_000,
            max_series: 100_000,
            max_labels_per_series: 128,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
        }
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
    #[error("request has more than limits.max_points_per_request ({limit}) samples")]
    TooManyPoints {
        /// The limit.
        limit: usize,
    },
    /// More series than allowed.
    #[error("request has more than limits.max_series_per_request ({limit}) series")]
    TooManySeries {
        /// The limit.
        limit: usize,
    },
    /// A series with more labels than allowed.
    #[error("series {index} has more than limits.max_labels_per_series ({limit}) labels besides __name__")]
    TooManyLabels {
        /// 0-based index of the series.
        index: usize,
        /// The limit.
        limit: usize,
    },
    /// A label name or value longer than allowed.
    #[error("series {index} has a label {what} of {len} bytes, more than limits.max_label_{what}_bytes ({limit})")]
    LabelTooLong {
        /// 0-based index of the series.
        index: usize,
        /// `name` or `value`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A Prometheus remote_write 2.0 (or other) message type, which Yaffle does not decode.
    #[error(
        "unsupported remote_write message type {0:?}: Yaffle accepts remote_write 1.0 \
         (Content-Type: application/x-protobuf;proto=prometheus.WriteRequest)"
    )]
    UnsupportedMessage(String),
}

impl ErrorStatus for RemoteWriteError {
    /// 413 for size limits, 415 for an unsupported message type, 400 for everything else.
    fn http_status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } | Self::TooManyPoints { .. } | Self::TooManySeries { .. } => 413,
            Self::UnsupportedMessage(_) => 415,
            _ => 400,
        }
    }

    /// The same body is refused again.
    fn is_retryable(&self) -> bool {
        false
    }
}

/// Checks a request's `Content-Type` the way the remote_write 2.0 spec asks receivers to: a missing
/// type, `application/x-protobuf` and `proto=prometheus.WriteRequest` are 1.0 bodies; any other
/// message type (`io.prometheus.write.v2.Request`) or media type is refused, so that a 2.0 sender
/// gets 415 and can fall back instead of being told its samples were stored.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), RemoteWriteError> {
    let Some(value) = content_type else { return Ok(()) };
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/x-protobuf" {
        return Err(RemoteWriteError::UnsupportedMessage(value.to_string()));
    }
    for param in parts {
        if let Some((k, v)) = param.split_once('=')
            && k.trim().eq_ignore_ascii_case("proto")
            && v.trim().trim_matches('"') != "prometheus.WriteRequest"
        {
            return Err(RemoteWriteError::UnsupportedMessage(v.trim().to_string()));
        }
    }
    Ok(())
}

/// The size a snappy body says it decompresses to, for choosing where to decode it.
pub fn decompressed_len(body: &[u8]) -> Option<usize> {
    snap::raw::decompress_len(body).ok()
}

/// Decompresses and decodes a remote_write body into points of `database`.
///
/// The protobuf is walked by hand, one series at a time, rather than decoded into a `WriteRequest`
/// first: each limit is checked as soon as what it counts is read, and label bytes stay slices of
/// the decompressed body until the series key copies them.
pub fn decode(body: &[u8], database: &str, limits: &Limits) -> Result<Vec<Point>, RemoteWriteError> {
    let size = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if size > limits.max_decompressed_bytes {
        return Err(RemoteWriteError::TooLarge { size, limit: limits.max_decompressed_bytes });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    decode_request(Bytes::from(raw), database, limits)
}

/// Decodes an uncompressed `WriteRequest` into points, checking `limits` (but the size) as it goes.
pub fn decode_request(mut buf: Bytes, database: &str, limits: &Limits) -> Result<Vec<Point>, RemoteWriteError> {
    let mut points = Vec::new();
    let mut scratch = Scratch::default();
    let mut index = 0;
    while buf.has_remaining() {
        let (tag, wire_type) = encoding::decode_key(&mut buf).map_err(protobuf)?;
        if tag != 1 || wire_type != WireType::LengthDelimited {
            encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(protobuf)?;
            continue;
        }
        if index == limits.max_series {
            return Err(RemoteWriteError::TooManySeries { limit: limits.max_series });
        }
        let series = length_delimited(&mut buf)?;
        decode_series(series, index, database, limits, &mut scratch, &mut points)?;
        index += 1;
    }
    Ok(points)
}

fn protobuf(e: prost::DecodeError) -> RemoteWriteError {
    RemoteWriteError::Protobuf(e.to_string())
}

fn length_delimited(buf: &mut Bytes) -> Result<Bytes, RemoteWriteError> {
    let len = encoding::decode_varint(buf).map_err(protobuf)?;
    if len > buf.remaining() as u64 {
        return Err(RemoteWriteError::Protobuf("buffer underflow".into()));
    }
    Ok(buf.split_to(len as usize))
}

/// Scratch space reused across the series of one request.
#[derive(Default)]
struct Scratch {
    labels: Vec<Label>,
    samples: Vec<Sample>,
}

/// Decodes one `TimeSeries`, appending its samples to `points`.
fn decode_series(
    mut buf: Bytes,
    index: usize,
    database: &str,
    limits: &Limits,
    scratch: &mut Scratch,
    points: &mut Vec<Point>,
) -> Result<(), RemoteWriteError> {
    let Scratch { labels, samples } = scratch;
    labels.clear();
    samples.clear();
    while buf.has_remaining() {
        let (tag, wire_type) = encoding::decode_key(&mut buf).map_err(protobuf)?;
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => {
                // One more label than the limit is room for `__name__`; counting every label as it is
                // read bounds the series however many `__name__` labels it repeats.
                if labels.len() > limits.max_labels_per_series {
                    return Err(RemoteWriteError::TooManyLabels { index, limit: limits.max_labels_per_series });
                }
                let label = Label::decode(length_delimited(&mut buf)?).map_err(protobuf)?;
                let too_long = |what, len, limit| RemoteWriteError::LabelTooLong { index, what, len, limit };
                if label.name.len() > limits.max_label_name_bytes && label.name != "__name__" {
                    return Err(too_long("name", label.name.len(), limits.max_label_name_bytes));
                }
                if label.value.len() > limits.max_label_value_bytes {
                    return Err(too_long("value", label.value.len(), limits.max_label_value_bytes));
                }
                labels.push(label);
            }
            (2, WireType::LengthDelimited) => {
                if points.len() + samples.len() == limits.max_points {
                    return Err(RemoteWriteError::TooManyPoints { limit: limits.max_points });
                }
                samples.push(Sample::decode(length_delimited(&mut buf)?).map_err(protobuf)?);
            }
            _ => encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(protobuf)?,
        }
    }
    let mut name = None;
    let mut tags = Vec::with_capacity(labels.len());
    for label in labels.iter() {
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
    points.extend(samples.iter().map(|s| Point {
        series: Arc::clone(&key),
        series_id: id,
        fields: vec![(PROMETHEUS_VALUE_FIELD.to_string(), FieldValue::Float(s.value))],
        timestamp: s.timestamp.saturating_mul(1_000_000),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(decode(&compress(&req), "p", &small), Err(RemoteWriteError::TooManyPoints { limit: 1 }));
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

    #[test]
    fn series_label_and_length_limits_are_checked_while_decoding() {
        let limits = Limits {
            max_series: 1,
            max_labels_per_series: 2,
            max_label_name_bytes: 4,
            max_label_value_bytes: 3,
            ..Limits::default()
        };
        let one = |labels: &[(&str, &str)]| WriteRequest { timeseries: vec![series(labels, &[(1.0, 1)])] };
        assert_eq!(
            decode(&compress(&one(&[("__name__", "x"), ("a", "1"), ("b", "2")])), "p", &limits).unwrap().len(),
            1
        );
        let two = WriteRequest { timeseries: vec![series(&[("__name__", "x")], &[]); 2] };
        assert_eq!(decode(&compress(&two), "p", &limits), Err(RemoteWriteError::TooManySeries { limit: 1 }));
        assert_eq!(
            decode(&compress(&one(&[("__name__", "x"), ("a", "1"), ("b", "2"), ("c", "3")])), "p", &limits),
            Err(RemoteWriteError::TooManyLabels { index: 0, limit: 2 })
        );
        let e = decode(&compress(&one(&[("__name__", "x"), ("abcde", "1")])), "p", &limits).unwrap_err();
        assert_eq!(e, RemoteWriteError::LabelTooLong { index: 0, what: "name", len: 5, limit: 4 });
        assert_eq!(e.to_string(), "series 0 has a label name of 5 bytes, more than limits.max_label_name_bytes (4)");
        assert_eq!(
            decode(&compress(&one(&[("__name__", "long")])), "p", &limits),
            Err(RemoteWriteError::LabelTooLong { index: 0, what: "value", len: 4, limit: 3 })
        );
    }

    /// A body of nothing but empty labels (2 bytes each on the wire) is refused at the first label over
    /// the limit, without decoding the rest: the decoder never holds more than one series' labels.
    #[test]
    fn a_body_of_empty_labels_is_refused_at_the_limit() {
        let mut series = Vec::new();
        for _ in 0..1_000_000 {
            prost::encoding::message::encode(1, &Label::default(), &mut series);
        }
        let mut body = Vec::new();
        prost::encoding::encode_key(1, WireType::LengthDelimited, &mut body);
        prost::encoding::encode_varint(series.len() as u64, &mut body);
        body.extend_from_slice(&series);
        assert_eq!(
            decode_request(Bytes::from(body), "p", &Limits::default()),
            Err(RemoteWriteError::TooManyLabels { index: 0, limit: 128 })
        );
    }

    #[test]
    fn samples_before_labels_and_unknown_fields_decode_like_prost() {
        // Field order is free in protobuf: samples first, then an unknown field, then the labels.
        let mut ts = Vec::new();
        prost::encoding::message::encode(2, &Sample { value: 2.5, timestamp: 7 }, &mut ts);
        prost::encoding::string::encode(9, &"exemplar".to_string(), &mut ts);
        prost::encoding::message::encode(1, &Label { name: "__name__".into(), value: "m".into() }, &mut ts);
        let mut body = Vec::new();
        prost::encoding::encode_key(1, WireType::LengthDelimited, &mut body);
        prost::encoding::encode_varint(ts.len() as u64, &mut body);
        body.extend_from_slice(&ts);
        let points = decode_request(Bytes::from(body.clone()), "p", &Limits::default()).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!((points[0].series.measurement(), points[0].timestamp), ("m", 7_000_000));
        let prost_view = WriteRequest::decode(&body[..]).unwrap();
        assert_eq!(prost_view.timeseries[0].samples[0], Sample { value: 2.5, timestamp: 7 });
        let truncated = Bytes::copy_from_slice(&body[..body.len() - 1]);
        assert!(matches!(decode_request(truncated, "p", &Limits::default()), Err(RemoteWriteError::Protobuf(_))));
    }

    #[test]
    fn remote_write_2_and_other_media_types_are_415() {
        for ok in [None, Some("application/x-protobuf"), Some("application/x-protobuf;proto=prometheus.WriteRequest")] {
            assert_eq!(check_content_type(ok), Ok(()), "{ok:?}");
        }
        let v2 = check_content_type(Some("application/x-protobuf;proto=io.prometheus.write.v2.Request")).unwrap_err();
        assert_eq!(v2.http_status(), 415);
        assert!(v2.to_string().contains("io.prometheus.write.v2.Request"), "{v2}");
        assert_eq!(check_content_type(Some("application/json")).unwrap_err().http_status(), 415);
    }
}
