//! Batches of points and their binary codec.
//!
//! One format serves the durable log and Kafka message values. It is versioned by its first four bytes
//! so a reader can refuse a batch it does not understand instead of misreading it.
//!
//! # Format, version 1
//!
//! All integers are unsigned LEB128 varints unless said otherwise; signed values are zigzag encoded.
//!
//! ```text
//! magic      "YFB"            3 bytes
//! version    1                1 byte
//! strings    count, then per string: length, UTF-8 bytes
//!                             every database, measurement, tag key, tag value, field key and string
//!                             value appears once and is referred to by its index below
//! points     count, then per point:
//!   series_id    u64 little endian (8 bytes)
//!   timestamp    zigzag delta from the previous point's timestamp (the first from 0)
//!   database     string index
//!   measurement  string index
//!   tags         count, then key index, value index per tag (sorted by key)
//!   fields       count, then per field: key index, type byte, value
//!                  float 0: 8 bytes little endian IEEE 754
//!                  integer 1: zigzag varint
//!                  unsigned 2: varint
//!                  boolean 3: 1 byte, 0 or 1
//!                  string 4: string index
//! ```
//!
//! Points of one series decoded from one batch share one [`SeriesKey`] allocation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::point::{FieldType, FieldValue, Point};
use crate::series::{SeriesId, SeriesKey};

const MAGIC: &[u8; 3] = b"YFB";
/// The codec version written by [`Batch::encode`].
pub const VERSION: u8 = 1;

/// An ordered group of points, the unit of the log and of Kafka messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The points, in the order they were accepted.
    pub points: Vec<Point>,
}

/// Why bytes could not be decoded as a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not start with the batch magic.
    #[error("not a yaffle batch (bad magic)")]
    BadMagic,
    /// A version this build cannot read.
    #[error("batch codec version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// The input ended inside a value.
    #[error("batch truncated at byte {0}")]
    Truncated(usize),
    /// A malformed value at a byte offset.
    #[error("corrupt batch at byte {offset}: {what}")]
    Corrupt {
        /// Byte offset of the bad value.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// A point that encodes, alone, to more bytes than a receiver takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("one point of series {series} encodes to {size} bytes, over the limit of {limit}")]
pub struct OversizedPoint {
    /// The point's series.
    pub series: String,
    /// Its encoded size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

impl Batch {
    /// Wraps points in a batch.
    pub fn new(points: Vec<Point>) -> Self {
        Self { points }
    }

    /// Encodes `points` as consecutive batches of at most `limit` bytes each (with their encodings),
    /// halving a batch until it fits: what a receiver with a message or body limit is sent. Fails
    /// when one point alone is over the limit.
    pub fn encode_within(points: Vec<Point>, limit: usize) -> Result<Vec<(Batch, Vec<u8>)>, OversizedPoint> {
        let mut out = Vec::new();
        let mut todo = vec![points];
        while let Some(points) = todo.pop() {
            let batch = Batch::new(points);
            let payload = batch.encode();
            if payload.len() <= limit {
                out.push((batch, payload));
                continue;
            }
            let mut first = batch.points;
            if first.len() == 1 {
                return Err(OversizedPoint { series: first[0].series.to_string(), size: payload.len(), limit });
            }
            let second = first.split_off(first.len() / 2);
            // Last in, first out: the first half is encoded next, so the order is kept.
            todo.extend([second, first]);
        }
        Ok(out)
    }

    /// Encodes the batch in the current codec version.
    pub fn encode(&self) -> Vec<u8> {
        let mut strings = StringTable::default();
        let mut body = Vec::with_capacity(self.points.len() * 48);
        let mut prev_ts = 0i64;
        for p in &self.points {
            body.extend_from_slice(&p.series_id.0.to_le_bytes());
            put_varint(&mut body, zigzag(p.timestamp.wrapping_sub(prev_ts)));
            prev_ts = p.timestamp;
            put_varint(&mut body, strings.index(p.series.database()));
            put_varint(&mut body, strings.index(p.series.measurement()));
            put_varint(&mut body, p.series.tags().len() as u64);
            for (k, v) in p.series.tags() {
                put_varint(&mut body, strings.index(k));
                put_varint(&mut body, strings.index(v));
            }
            put_varint(&mut body, p.fields.len() as u64);
            for (k, v) in &p.fields {
                put_varint(&mut body, strings.index(k));
                body.push(v.field_type() as u8);
                match v {
                    FieldValue::Float(f) => body.extend_from_slice(&f.to_bits().to_le_bytes()),
                    FieldValue::Integer(i) => put_varint(&mut body, zigzag(*i)),
                    FieldValue::Unsigned(u) => put_varint(&mut body, *u),
                    FieldValue::Boolean(b) => body.push(u8::from(*b)),
                    FieldValue::String(s) => put_varint(&mut body, strings.index(s)),
                }
            }
        }
        let mut out = Vec::with_capacity(body.len() + strings.bytes + strings.list.len() * 2 + 16);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_varint(&mut out, strings.list.len() as u64);
        for s in &strings.list {
            put_varint(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        put_varint(&mut out, self.points.len() as u64);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a batch written by [`Batch::encode`] of a version this build reads.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = BatchReader::new(bytes)?;
        let mut points = Vec::with_capacity(reader.remaining());
        let mut series: HashMap<u64, Arc<SeriesKey>> = HashMap::new();
        while let Some(p) = reader.next_point()? {
            let key = match series.get(&p.series_id.0) {
                Some(k) if same_series(k, &p) => Arc::clone(k),
                _ => {
                    let k = Arc::new(p.series_key());
                    series.insert(p.series_id.0, Arc::clone(&k));
                    k
                }
            };
            let fields = p
                .fields
                .iter()
                .map(|&(name, value)| {
                    let value = match value {
                        FieldRef::Float(v) => FieldValue::Float(v),
                        FieldRef::Integer(v) => FieldValue::Integer(v),
                        FieldRef::Unsigned(v) => FieldValue::Unsigned(v),
                        FieldRef::Boolean(v) => FieldValue::Boolean(v),
                        FieldRef::String(i) => FieldValue::String(p.string(i).to_string()),
                    };
                    (p.string(name).to_string(), value)
                })
                .collect();
            points.push(Point { series: key, series_id: p.series_id, fields, timestamp: p.timestamp });
        }
        Ok(Self { points })
    }
}

/// A field value read in place from an encoded batch; a string value is its index in
/// [`PointRef::strings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef {
    /// A float.
    Float(f64),
    /// A signed integer.
    Integer(i64),
    /// An unsigned integer.
    Unsigned(u64),
    /// A boolean.
    Boolean(bool),
    /// A string, by its index in the batch's string table.
    String(u32),
}

impl FieldRef {
    /// The value as a float, for numeric fields (as [`FieldValue::as_f64`]).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            FieldRef::Float(v) => Some(v),
            FieldRef::Integer(v) => Some(v as f64),
            FieldRef::Unsigned(v) => Some(v as f64),
            FieldRef::Boolean(_) | FieldRef::String(_) => None,
        }
    }
}

/// One point of an encoded batch, read in place: its strings are indexes into [`PointRef::strings`],
/// the batch's string table.
#[derive(Debug)]
pub struct PointRef<'r, 'a> {
    /// The batch's strings.
    pub strings: &'r [&'a str],
    /// The series id written with the point.
    pub series_id: SeriesId,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The database's string index.
    pub database: u32,
    /// The measurement's string index.
    pub measurement: u32,
    /// Tag key and value string indexes, sorted by key.
    pub tags: &'r [(u32, u32)],
    /// Field key string indexes and values, in the order written.
    pub fields: &'r [(u32, FieldRef)],
}

impl<'a> PointRef<'_, 'a> {
    /// The string at an index of this point.
    pub fn string(&self, index: u32) -> &'a str {
        self.strings[index as usize]
    }

    /// The point's series key, owned.
    pub fn series_key(&self) -> SeriesKey {
        let tags = self.tags.iter().map(|&(k, v)| (self.string(k), self.string(v))).collect();
        SeriesKey::from_tags(self.string(self.database), self.string(self.measurement), tags)
    }
}

/// Reads an encoded batch point by point without allocating per point: what a consumer that keeps
/// only aggregates (the downsampler) reads with, where [`Batch::decode`] would build every point.
#[derive(Debug)]
pub struct BatchReader<'a> {
    strings: Vec<&'a str>,
    r: Reader<'a>,
    left: usize,
    prev_ts: i64,
    tags: Vec<(u32, u32)>,
    fields: Vec<(u32, FieldRef)>,
}

impl<'a> BatchReader<'a> {
    /// Checks the header and reads the string table.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 4 || &bytes[..3] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[3] != VERSION {
            return Err(DecodeError::UnsupportedVersion(bytes[3]));
        }
        let mut r = Reader { bytes, pos: 4 };
        let n_strings = r.count(1)?;
        let mut strings = Vec::with_capacity(n_strings);
        for _ in 0..n_strings {
            let len = r.count(1)?;
            let start = r.pos;
            let raw = r.take(len)?;
            let s = std::str::from_utf8(raw)
                .map_err(|_| DecodeError::Corrupt { offset: start, what: "string is not UTF-8" })?;
            strings.push(s);
        }
        // A point takes at least 13 bytes (id, timestamp, 2 indexes, 2 counts).
        let left = r.count(13)?;
        Ok(Self { strings, r, left, prev_ts: 0, tags: Vec::new(), fields: Vec::new() })
    }

    /// The points not read yet.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The batch's string table.
    pub fn strings(&self) -> &[&'a str] {
        &self.strings
    }

    /// The next point, `None` after the last (when the batch must also have ended).
    pub fn next_point(&mut self) -> Result<Option<PointRef<'_, 'a>>, DecodeError> {
        let r = &mut self.r;
        if self.left == 0 {
            if r.pos != r.bytes.len() {
                return Err(DecodeError::Corrupt { offset: r.pos, what: "trailing bytes after the last point" });
            }
            return Ok(None);
        }
        self.left -= 1;
        let n = self.strings.len();
        let id = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let ts = self.prev_ts.wrapping_add(unzigzag(r.varint()?));
        self.prev_ts = ts;
        let database = r.index(n)?;
        let measurement = r.index(n)?;
        let n_tags = r.count(2)?;
        self.tags.clear();
        for _ in 0..n_tags {
            self.tags.push((r.index(n)?, r.index(n)?));
        }
        let n_fields = r.count(2)?;
        self.fields.clear();
        for _ in 0..n_fields {
            let name = r.index(n)?;
            let at = r.pos;
            let ty = FieldType::from_u8(r.take(1)?[0])
                .ok_or(DecodeError::Corrupt { offset: at, what: "unknown field type" })?;
            let value = match ty {
                FieldType::Float => {
                    FieldRef::Float(f64::from_bits(u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))))
                }
                FieldType::Integer => FieldRef::Integer(unzigzag(r.varint()?)),
                FieldType::Unsigned => FieldRef::Unsigned(r.varint()?),
                FieldType::Boolean => FieldRef::Boolean(r.take(1)?[0] != 0),
                FieldType::String => FieldRef::String(r.index(n)?),
            };
            self.fields.push((name, value));
        }
        Ok(Some(PointRef {
            strings: &self.strings,
            series_id: SeriesId(id),
            timestamp: ts,
            database,
            measurement,
            tags: &self.tags,
            fields: &self.fields,
        }))
    }
}

fn same_series(key: &SeriesKey, p: &PointRef<'_, '_>) -> bool {
    key.database() == p.string(p.database)
        && key.measurement() == p.string(p.measurement)
        && key.tags().len() == p.tags.len()
        && key.tags().zip(p.tags).all(|((k, v), &(k2, v2))| k == p.string(k2) && v == p.string(v2))
}
#[derive(Default)]
struct StringTable<'a> {
    index: HashMap<&'a str, u64>,
    list: Vec<&'a str>,
    bytes: usize,
}

impl<'a> StringTable<'a> {
    fn index(&mut self, s: &'a str) -> u64 {
        let next = self.list.len() as u64;
        *self.index.entry(s).or_insert_with(|| {
            self.list.push(s);
            self.bytes += s.len();
            next
        })
    }
}

#[derive(Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated(self.pos))?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Corrupt { offset: start, what: "varint longer than 10 bytes" })
    }

    /// Reads a count of items that take at least `min_item_bytes` each, refusing counts the remaining
    /// input cannot hold (so a corrupt count cannot make us allocate gigabytes).
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes as u64) > remaining {
            return Err(DecodeError::Corrupt { offset: at, what: "count exceeds the remaining bytes" });
        }
        Ok(n as usize)
    }

    /// A string index below `strings`.
    fn index(&mut self, strings: usize) -> Result<u32, DecodeError> {
        let at = self.pos;
        let i = self.varint()?;
        if i >= strings as u64 {
            return Err(DecodeError::Corrupt { offset: at, what: "string index out of range" });
        }
        Ok(i as u32)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>().prop_filter("NaN breaks equality", |f| !f.is_nan()).prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Integer),
            any::<u64>().prop_map(FieldValue::Unsigned),
            any::<bool>().prop_map(FieldValue::Boolean),
            ".{0,12}".prop_map(FieldValue::String),
        ]
    }

    fn arb_point() -> impl Strategy<Value = Point> {
        let tags = proptest::collection::btree_map("[a-z ,=]{1,6}", ".{0,8}", 0..4);
        let fields = proptest::collection::btree_map("[a-z_]{1,6}", arb_value(), 1..4);
        ("[a-z]{0,3}", ".{1,10}", tags, fields, any::<i64>()).prop_map(|(db, m, tags, fields, ts)| {
            let key = SeriesKey::new(db, m, tags.into_iter().collect());
            Point::new(Arc::new(key), fields.into_iter().collect(), ts)
        })
    }

    proptest! {
        #[test]
        fn round_trips(points in proptest::collection::vec(arb_point(), 0..20)) {
            let batch = Batch::new(points);
            let decoded = Batch::decode(&batch.encode()).unwrap();
            prop_assert_eq!(decoded, batch);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut framed = b"YFB\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = Batch::decode(&framed);
        }
    }

    #[test]
    fn refuses_other_versions_and_formats() {
        assert_eq!(Batch::decode(b"YFB\x02"), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(Batch::decode(b"{}"), Err(DecodeError::BadMagic));
    }

    #[test]
    fn truncation_is_detected() {
        let key = Arc::new(SeriesKey::new("db", "m", vec![]));
        let bytes = Batch::new(vec![Point::new(key, vec![("f".into(), FieldValue::Float(1.0))], 5)]).encode();
        for cut in 4..bytes.len() {
            assert!(Batch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn series_are_shared_within_a_batch() {
        let key = Arc::new(SeriesKey::new("db", "m", vec![("h".into(), "a".into())]));
        let p = |ts| Point::new(Arc::clone(&key), vec![("f".into(), FieldValue::Integer(ts))], ts);
        let decoded = Batch::decode(&Batch::new(vec![p(1), p(2)]).encode()).unwrap();
        assert!(Arc::ptr_eq(&decoded.points[0].series, &decoded.points[1].series));
    }

    /// Version 1 as bytes on disk and in Kafka: a round trip cannot catch a change made to the encoder
    /// and the decoder together, this can. Changing these bytes means a new codec version.
    #[test]
    fn version_1_is_pinned_byte_for_byte() {
        const GOLDEN: &str = concat!(
            "594642010e0874656c65677261660363707502646303783d3104686f737403612062057573616765016e0175027570036d",
            "73670668c3a96c6c6f036d656d046672656503b313f0ab6f350d638080d0e2c6bfce972f00010202030405050600000000",
            "000000f8bf0701d7040802ffffffffffffffffff010903010a040bb313f0ab6f350d63ffa7d6b9070001020203040501060000",
            "000000000000400da1a3a28c7ba93389d8f9a8bfbfce972f000c00010d0207"
        );
        let cpu = Arc::new(SeriesKey::new(
            "telegraf",
            "cpu",
            vec![("host".into(), "a b".into()), ("dc".into(), "x=1".into())],
        ));
        let mem = Arc::new(SeriesKey::new("telegraf", "mem", vec![]));
        let batch = Batch::new(vec![
            Point::new(
                Arc::clone(&cpu),
                vec![
                    ("usage".into(), FieldValue::Float(-1.5)),
                    ("n".into(), FieldValue::Integer(-300)),
                    ("u".into(), FieldValue::Unsigned(u64::MAX)),
                    ("up".into(), FieldValue::Boolean(true)),
                    ("msg".into(), FieldValue::String("héllo".into())),
                ],
                1_700_000_000_000_000_000,
            ),
            Point::new(Arc::clone(&cpu), vec![("usage".into(), FieldValue::Float(2.0))], 1_699_999_999_000_000_000),
            Point::new(mem, vec![("free".into(), FieldValue::Unsigned(7))], -5),
        ]);
        let hex: String = batch.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN, "batch codec v1 changed");
        let bytes: Vec<u8> =
            (0..GOLDEN.len()).step_by(2).map(|i| u8::from_str_radix(&GOLDEN[i..i + 2], 16).unwrap()).collect();
        assert_eq!(Batch::decode(&bytes).unwrap(), batch);
    }

    #[test]
    fn batches_are_split_in_order_to_fit_a_limit() {
        let series = Arc::new(SeriesKey::new("db", "m", vec![("host".into(), "a".repeat(40))]));
        let point = |i: i64| Point {
            series: Arc::clone(&series),
            series_id: series.id(),
            fields: vec![("v".into(), FieldValue::Float(i as f64))],
            timestamp: i,
        };
        let points: Vec<Point> = (0..100).map(point).collect();
        let whole = Batch::new(points.clone()).encode().len();
        let parts = Batch::encode_within(points.clone(), whole / 5).unwrap();
        assert!(parts.len() >= 5, "{}", parts.len());
        assert!(parts.iter().all(|(_, p)| p.len() <= whole / 5));
        let back: Vec<Point> = parts.iter().flat_map(|(_, p)| Batch::decode(p).unwrap().points).collect();
        assert_eq!(back, points);
        assert_eq!(Batch::encode_within(points.clone(), whole).unwrap().len(), 1);
        let e = Batch::encode_within(points, 10).unwrap_err();
        assert_eq!(e.limit, 10);
        assert!(e.to_string().starts_with("one point of series db/m,host=aaaa"), "{e}");
    }
}
