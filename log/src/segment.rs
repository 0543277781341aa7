//! Segment files and the record framing.
//!
//! A segment is named by the log position of its first byte (`00000000000000004096.seg`); positions
//! are byte offsets in the concatenation of all segments, so locating a position needs no index.
//! A record is a 16-byte header and the payload:
//!
//! ```text
//! payload length  u32 LE
//! crc32           u32 LE   over the ingest time and the payload
//! ingest time     i64 LE   nanoseconds, never decreasing along the log
//! payload         the batch codec's bytes
//! ```
//!
//! A record is valid when it is whole and its checksum holds. After an invalid stretch, reading resumes
//! at the next offset where a valid record starts ([`next_valid`]): a flipped length can no longer be
//! followed, so the framing is found again by scanning.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(crate) const HEADER_BYTES: u64 = 16;

/// The largest payload any reader accepts. `log.max_record_bytes` can only be set lower, so every
/// record an append accepted reads back, whatever the configuration when it is read.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position of the record's first byte.
    pub position: u64,
    /// Position just after the record: where the next one starts, and what a cursor commits.
    pub next: u64,
    /// When ingest appended it, nanoseconds since the epoch.
    pub ingest_time: i64,
    /// The batch codec's bytes.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) base: u64,
    /// Ingest time of the first record, once it has one.
    pub(crate) first_time: Option<i64>,
}

pub(crate) fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

pub(crate) fn encode(out: &mut Vec<u8>, ingest_time: i64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(ingest_time, payload).to_le_bytes());
    out.extend_from_slice(&ingest_time.to_le_bytes());
    out.extend_from_slice(payload);
}

fn crc(time: i64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&time.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

pub(crate) struct Header {
    pub(crate) len: u32,
    crc: u32,
    pub(crate) time: i64,
}

impl Header {
    fn parse(h: &[u8]) -> Self {
        Header {
            len: u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")),
            time: i64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        }
    }

    /// The record's length with its header.
    pub(crate) fn record_bytes(&self) -> u64 {
        HEADER_BYTES + u64::from(self.len)
    }

    fn holds(&self, payload: &[u8]) -> bool {
        crc(self.time, payload) == self.crc
    }
}

/// Reads a header; `None` at the end of the file or a short (torn) header.
pub(crate) fn read_header(r: &mut impl Read) -> io::Result<Option<Header>> {
    let mut h = [0u8; HEADER_BYTES as usize];
    match r.read_exact(&mut h) {
        Ok(()) => Ok(Some(Header::parse(&h))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the record at the reader's offset if it is valid and ends within `room` bytes; `None` if it
/// is torn, too long or fails its checksum (the reader then stands anywhere).
pub(crate) fn read_valid(r: &mut impl Read, room: u64) -> io::Result<Option<(Header, Vec<u8>)>> {
    let Some(h) = read_header(r)? else { return Ok(None) };
    if u64::from(h.len) > MAX_RECORD_BYTES || h.record_bytes() > room {
        return Ok(None);
    }
    let mut payload = vec![0; h.len as usize];
    match r.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(h.holds(&payload).then_some((h, payload)))
}

/// The header of the valid record at the start of `bytes`, if there is one.
fn valid_at(bytes: &[u8]) -> Option<Header> {
    let h = Header::parse(bytes.get(..HEADER_BYTES as usize)?);
    let payload = bytes.get(HEADER_BYTES as usize..usize::try_from(h.record_bytes()).ok()?)?;
    (u64::from(h.len) <= MAX_RECORD_BYTES && h.holds(payload)).then_some(h)
}

/// The first offset at or after `from` where a valid record starts in `bytes`.
pub(crate) fn next_valid(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_BYTES as usize - 1)).find(|&i| valid_at(&bytes[i..]).is_some())
}

/// Lists segment bases in the directory, sorted.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = name.strip_suffix(".seg").and_then(|b| b.parse().ok()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// What recovery found in the last segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// The segment's length once its torn tail is cut.
    pub(crate) len: u64,
    /// The first valid record's ingest time.
    pub(crate) first_time: Option<i64>,
    /// Corrupt stretches followed by valid records, `(from, to)` offsets in the segment: kept, for
    /// readers to skip and count.
    pub(crate) corrupt: Vec<(u64, u64)>,
}

/// Scans the last segment from its start and cuts what follows its last valid record: the tail a crash
/// in the middle of a write leaves. An invalid stretch with valid records after it is no torn tail (a
/// flipped bit, a bad sector): it is kept and reported, so the records after it are not lost.
pub(crate) fn recover(path: &Path) -> io::Result<Recovered> {
    let bytes = fs::read(path)?;
    let mut offset = 0usize;
    let mut len = 0usize;
    let mut first_time = None;
    let mut corrupt = Vec::new();
    while offset < bytes.len() {
        if let Some(h) = valid_at(&bytes[offset..]) {
            first_time.get_or_insert(h.time);
            offset += h.record_bytes() as usize;
            len = offset;
        } else if let Some(next) = next_valid(&bytes, offset + 1) {
            corrupt.push((offset as u64, next as u64));
            offset = next;
        } else {
            break;
        }
    }
    for &(from, to) in &corrupt {
        tracing::error!(segment = %path.display(), from, to, bytes = to - from, "corrupt log records between valid ones: kept for readers to skip and count");
    }
    if len < bytes.len() {
        tracing::warn!(segment = %path.display(), kept = len, dropped = bytes.len() - len, "truncated a torn log tail");
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len as u64)?;
        file.sync_all()?;
    }
    Ok(Recovered { len: len as u64, first_time, corrupt })
}

/// Where reading resumes after an invalid record at `offset` of a segment file: the next valid record
/// before `stop` (an offset), or `stop` when there is none (the segment's end, or its truncated rest).
pub(crate) fn resync(path: &Path, offset: u64, stop: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset + 1))?;
    let mut rest = Vec::new();
    f.take(stop.saturating_sub(offset + 1)).read_to_end(&mut rest)?;
    Ok(next_valid(&rest, 0).map_or(stop, |i| offset + 1 + i as u64))
}

/// Reads the time of the first record of a closed segment.
pub(crate) fn first_time(path: &Path) -> io::Result<Option<i64>> {
    let mut f = File::open(path)?;
    Ok(read_header(&mut f)?.map(|h| h.time))
}

/// Finds the position of the first record at or after `time` in a segment; `None` if all are earlier.
pub(crate) fn find_time(path: &Path, base: u64, time: i64) -> io::Result<Option<u64>> {
    let mut r = BufReader::new(File::open(path)?);
    let mut offset = 0u64;
    while let Some(h) = read_header(&mut r)? {
        if h.time >= time {
            return Ok(Some(base + offset));
        }
        offset += h.record_bytes();
        r.seek(SeekFrom::Start(offset))?;
    }
    Ok(None)
}
