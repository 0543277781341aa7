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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(super) const HEADER_BYTES: u64 = 16;
/// Larger lengths are treated as corruption.
pub(super) const MAX_RECORD_BYTES: u32 = 1 << 30;

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
pub(super) struct SegmentInfo {
    pub(super) base: u64,
    /// Ingest time of the first record, once it has one.
    pub(super) first_time: Option<i64>,
}

pub(super) fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

pub(super) fn encode(out: &mut Vec<u8>, ingest_time: i64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&ingest_time.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&ingest_time.to_le_bytes());
    out.extend_from_slice(payload);
}

pub(super) struct Header {
    pub(super) len: u32,
    pub(super) crc: u32,
    pub(super) time: i64,
}

/// Reads a header; `None` at a clean end of file or a torn (short) header.
pub(super) fn read_header(r: &mut impl Read) -> io::Result<Option<Header>> {
    let mut h = [0u8; HEADER_BYTES as usize];
    match r.read_exact(&mut h) {
        Ok(()) => Ok(Some(Header {
            len: u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")),
            time: i64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        })),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn crc_ok(h: &Header, payload: &[u8]) -> bool {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h.time.to_le_bytes());
    crc.update(payload);
    crc.finalize() == h.crc
}

/// Lists segment bases in the directory, sorted.
pub(super) fn list(dir: &Path) -> io::Result<Vec<u64>> {
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

/// Scans a segment from its start, verifying every record, and truncates a torn or corrupt tail (what a
/// crash in the middle of a write leaves). Returns the valid length and the first record's time.
pub(super) fn recover(path: &Path) -> io::Result<(u64, Option<i64>)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, &file);
    let mut valid = 0u64;
    let mut first_time = None;
    let mut payload = Vec::new();
    while let Some(h) = read_header(&mut r)? {
        if h.len > MAX_RECORD_BYTES || valid + HEADER_BYTES + u64::from(h.len) > file_len {
            break;
        }
        payload.resize(h.len as usize, 0);
        r.read_exact(&mut payload)?;
        if !crc_ok(&h, &payload) {
            break;
        }
        first_time.get_or_insert(h.time);
        valid += HEADER_BYTES + u64::from(h.len);
    }
    if valid < file_len {
        tracing::warn!(segment = %path.display(), kept = valid, dropped = file_len - valid, "truncated a torn log tail");
        file.set_len(valid)?;
        file.sync_all()?;
    }
    Ok((valid, first_time))
}

/// Reads the time of the first record of a closed segment.
pub(super) fn first_time(path: &Path) -> io::Result<Option<i64>> {
    let mut f = File::open(path)?;
    Ok(read_header(&mut f)?.map(|h| h.time))
}

/// Finds the position of the first record at or after `time` in a segment; `None` if all are earlier.
pub(super) fn find_time(path: &Path, base: u64, time: i64) -> io::Result<Option<u64>> {
    let mut r = BufReader::new(File::open(path)?);
    let mut offset = 0u64;
    while let Some(h) = read_header(&mut r)? {
        if h.time >= time {
            return Ok(Some(base + offset));
        }
        offset += HEADER_BYTES + u64::from(h.len);
        r.seek(SeekFrom::Start(offset))?;
    }
    Ok(None)
}
