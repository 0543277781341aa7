//! Reading the log from a position, following a cursor.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use super::cursor::CursorName;
use super::segment::{self, HEADER_BYTES, MAX_RECORD_BYTES, Record};
use crate::error::IngestError;

/// Reads records in order from a position. A reader bound to a cursor skips what the cursor's
/// `drop_oldest` policy dropped; committing is the caller's job ([`super::Log::commit`]).
#[derive(Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
    cursor: Option<CursorName>,
    position: u64,
    open: Option<OpenSegment>,
    end: tokio::sync::watch::Receiver<u64>,
}

#[derive(Debug)]
struct OpenSegment {
    base: u64,
    /// Where the next segment starts (`None` for the active one).
    limit: Option<u64>,
    reader: BufReader<File>,
    /// File offset `reader` stands at.
    offset: u64,
}

impl LogReader {
    pub(super) fn new(shared: Arc<Shared>, cursor: Option<CursorName>, position: u64) -> Self {
        let end = shared.end.subscribe();
        Self { shared, cursor, position, open: None, end }
    }

    /// The position of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to `position`, which must be a record boundary (a position a record or cursor reported).
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// Returns the next records, at least one and about `max_bytes` in all, waiting up to `wait` for one
    /// to be appended; an empty vector when none came in time.
    pub async fn next(&mut self, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, IngestError> {
        self.skip_dropped();
        if *self.end.borrow_and_update() <= self.position {
            let position = self.position;
            let waited = tokio::time::timeout(wait, self.end.wait_for(|&end| end > position)).await;
            match waited {
                Err(_) => return Ok(Vec::new()),
                Ok(Err(_)) => return Err(IngestError::ShuttingDown),
                Ok(Ok(_)) => {}
            }
        }
        let end = *self.end.borrow();
        let mut open = self.open.take();
        let mut position = self.position;
        let shared = Arc::clone(&self.shared);
        let (records, open) = tokio::task::spawn_blocking(move || {
            let records = read_records(&shared, &mut open, &mut position, end, max_bytes);
            (records.map(|r| (r, position)), open)
        })
        .await
        .expect("log read task panicked");
        self.open = open;
        let (records, position) = records?;
        self.position = position;
        Ok(records)
    }

    fn skip_dropped(&mut self) {
        let start = self.shared.segments.read().expect("segments lock")[0].base;
        let floor = self.cursor.map_or(0, |c| self.shared.cursors[c.index()].floor.load(Ordering::Acquire));
        let to = start.max(floor);
        if self.position < to {
            tracing::warn!(cursor = ?self.cursor.map(CursorName::as_str), from = self.position, to, "reader skipped data that is no longer kept for it");
            self.position = to;
            self.open = None;
        }
    }
}

fn read_records(
    shared: &Shared,
    open: &mut Option<OpenSegment>,
    position: &mut u64,
    end: u64,
    max_bytes: usize,
) -> Result<Vec<Record>, IngestError> {
    let mut records = Vec::new();
    let mut bytes = 0usize;
    while *position < end && (records.is_empty() || bytes < max_bytes) {
        let seg = segment_for(shared, open, *position)?;
        if seg.limit.is_some_and(|l| *position >= l) {
            *open = None;
            continue;
        }
        let want = *position - seg.base;
        if seg.offset != want {
            seg.reader.seek(SeekFrom::Start(want)).map_err(IngestError::io(&shared.dir))?;
            seg.offset = want;
        }
        let corrupt = |what: &str| IngestError::LogCorrupt { position: *position, reason: what.to_string() };
        let h = segment::read_header(&mut seg.reader)
            .map_err(IngestError::io(&shared.dir))?
            .ok_or_else(|| corrupt("header past the end of its segment"))?;
        if h.len > MAX_RECORD_BYTES {
            return Err(corrupt("record length"));
        }
        let mut payload = vec![0; h.len as usize];
        seg.reader.read_exact(&mut payload).map_err(IngestError::io(&shared.dir))?;
        if !segment::crc_ok(&h, &payload) {
            return Err(corrupt("checksum mismatch"));
        }
        let next = *position + HEADER_BYTES + u64::from(h.len);
        seg.offset += HEADER_BYTES + u64::from(h.len);
        bytes += payload.len();
        records.push(Record { position: *position, next, ingest_time: h.time, payload });
        *position = next;
    }
    Ok(records)
}

fn segment_for<'a>(
    shared: &Shared,
    open: &'a mut Option<OpenSegment>,
    position: u64,
) -> Result<&'a mut OpenSegment, IngestError> {
    let fits = open.as_ref().is_some_and(|s| s.base <= position && s.limit.is_none_or(|l| position < l));
    if !fits {
        let segments = shared.segments.read().expect("segments lock");
        let idx = segments.partition_point(|s| s.base <= position);
        if idx == 0 {
            return Err(IngestError::LogCorrupt { position, reason: "position before the start of the log".into() });
        }
        let base = segments[idx - 1].base;
        let limit = segments.get(idx).map(|s| s.base);
        drop(segments);
        let path = segment::path(&shared.dir, base);
        let file = File::open(&path).map_err(IngestError::io(&path))?;
        *open = Some(OpenSegment { base, limit, reader: BufReader::with_capacity(1 << 20, file), offset: 0 });
    }
    let seg = open.as_mut().expect("just opened");
    if seg.limit.is_none() {
        // The active segment may have been closed since it was opened.
        let segments = shared.segments.read().expect("segments lock");
        seg.limit = segments.iter().map(|s| s.base).find(|&b| b > seg.base);
    }
    Ok(seg)
}
