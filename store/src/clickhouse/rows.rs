//! `points_local` rows in ClickHouse's RowBinary format, built straight from points.
//!
//! A [`Block`] is the unit of one insert. Its bytes depend only on the points and their order, never on
//! time or on the replica, so a block built again from the same log range is byte-identical and
//! ReplicatedMergeTree's insert deduplication recognises it (see the module doc of [`super`]).

use std::sync::Arc;

use bytes::Bytes;
use yaffle_core::{FieldValue, Point, SeriesKey};

use crate::rollups::RollupRow;

/// Rows for one shard's `points_local`, encoded as RowBinary in the column order of `points_local`.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    rows: usize,
    /// The encoded series columns of the last series seen: consecutive points of a series share them.
    last_series: Option<(Arc<SeriesKey>, Vec<u8>)>,
}

/// An encoded block, ready to insert (and to insert again, unchanged, on retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// RowBinary rows.
    pub data: Bytes,
    /// Number of rows.
    pub rows: usize,
}

impl BlockBuilder {
    /// Appends one row per field of `point`, with its route.
    pub fn push(&mut self, point: &Point, route: u64) {
        let series = match &self.last_series {
            Some((k, bytes)) if Arc::ptr_eq(k, &point.series) || **k == *point.series => bytes,
            _ => {
                let bytes = encode_series(&point.series, point.series_id.0);
                &self.last_series.insert((Arc::clone(&point.series), bytes)).1
            }
        };
        for (name, value) in &point.fields {
            let b = &mut self.buf;
            b.extend_from_slice(&route.to_le_bytes());
            b.extend_from_slice(&point.timestamp.to_le_bytes());
            b.extend_from_slice(series);
            string(b, name);
            let (f, i, u, bo, s) = match value {
                FieldValue::Float(v) => (Some(*v), None, None, None, None),
                FieldValue::Integer(v) => (Some(*v as f64), Some(*v), None, None, None),
                FieldValue::Unsigned(v) => (Some(*v as f64), None, Some(*v), None, None),
                FieldValue::Boolean(v) => (None, None, None, Some(u8::from(*v)), None),
                FieldValue::String(v) => (None, None, None, None, Some(v.as_str())),
            };
            nullable(b, f, |b, v| b.extend_from_slice(&v.to_le_bytes()));
            nullable(b, i, |b, v| b.extend_from_slice(&v.to_le_bytes()));
            nullable(b, u, |b, v| b.extend_from_slice(&v.to_le_bytes()));
            nullable(b, bo, |b, v| b.push(v));
            nullable(b, s, string);
            self.rows += 1;
        }
    }

    /// Rows so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Encoded bytes so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Takes the block, leaving the builder empty.
    pub fn finish(&mut self) -> Block {
        self.last_series = None;
        Block { data: Bytes::from(std::mem::take(&mut self.buf)), rows: std::mem::take(&mut self.rows) }
    }
}

/// Rows for one shard's `rollups_local`, in [`super::ddl::ROLLUP_COLUMNS`] order, with their routes.
pub(super) fn rollup_block<'a>(rows: impl IntoIterator<Item = (&'a RollupRow, u64)>) -> Block {
    let (mut b, mut n) = (Vec::new(), 0);
    for (r, route) in rows {
        b.extend_from_slice(&route.to_le_bytes());
        b.extend_from_slice(&r.resolution_s.to_le_bytes());
        b.extend_from_slice(&r.window_start_ns.to_le_bytes());
        b.extend_from_slice(&encode_series(&r.series, r.series_id.0));
        string(&mut b, &r.field);
        b.extend_from_slice(&r.aggregate.count.to_le_bytes());
        let a = &r.aggregate;
        for v in [a.sum, a.min, a.max, a.first.1, a.last.1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&a.first.0.to_le_bytes());
        b.extend_from_slice(&a.last.0.to_le_bytes());
        string(&mut b, &r.sketch);
        b.extend_from_slice(&r.version.to_le_bytes());
        n += 1;
    }
    Block { data: Bytes::from(b), rows: n }
}

/// `database, measurement, series_id, series_key, tag_keys, tag_values`.
fn encode_series(key: &SeriesKey, id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + key.tags().len() * 24);
    string(&mut b, key.database());
    string(&mut b, key.measurement());
    b.extend_from_slice(&id.to_le_bytes());
    string(&mut b, &key.to_string());
    varint(&mut b, key.tags().len() as u64);
    for (k, _) in key.tags() {
        string(&mut b, k);
    }
    varint(&mut b, key.tags().len() as u64);
    for (_, v) in key.tags() {
        string(&mut b, v);
    }
    b
}

fn nullable<T>(b: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => b.push(1),
        Some(v) => {
            b.push(0);
            write(b, v);
        }
    }
}

fn string(b: &mut Vec<u8>, s: &str) {
    varint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

/// Unsigned LEB128: RowBinary's length prefix, and the sketch encoding's integers.
pub(crate) fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128() {
        let mut b = Vec::new();
        varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }

    #[test]
    fn a_row_is_encoded_column_by_column() {
        let key = Arc::new(SeriesKey::new("d", "m", vec![("t".into(), "v".into())]));
        let point = Point::new(Arc::clone(&key), vec![("f".into(), FieldValue::Integer(-2))], 5);
        let mut builder = BlockBuilder::default();
        builder.push(&point, 7);
        let block = builder.finish();
        let mut want = Vec::new();
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&5i64.to_le_bytes());
        want.extend_from_slice(b"\x01d\x01m");
        want.extend_from_slice(&key.id().0.to_le_bytes());
        want.extend_from_slice(b"\x07d/m,t=v\x01\x01t\x01\x01v\x01f");
        want.extend_from_slice(b"\x00");
        want.extend_from_slice(&(-2.0f64).to_le_bytes());
        want.extend_from_slice(b"\x00");
        want.extend_from_slice(&(-2i64).to_le_bytes());
        want.extend_from_slice(b"\x01\x01\x01");
        assert_eq!(block.rows, 1);
        assert_eq!(&block.data[..], &want[..]);
    }

    #[test]
    fn the_same_points_make_the_same_bytes() {
        let build = || {
            let mut b = BlockBuilder::default();
            for i in 0..3 {
                let key = Arc::new(SeriesKey::new("d", "m", vec![("h".into(), format!("{i}"))]));
                b.push(&Point::new(key, vec![("v".into(), FieldValue::Float(i as f64))], i), i as u64);
            }
            b.finish()
        };
        assert_eq!(build(), build());
    }
}
