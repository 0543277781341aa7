//! Reading the log from a position, following a cursor.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Shared;
use crate::cursor::CursorName;
use crate::error::LogError;
use crate::segment::{self, Record};

/// Reads records in order from a position. A reader bound to a cursor skips what the cursor's
/// `drop_oldest` policy dropped; committing is the caller's job ([`crate::Log::commit`]).
///
/// A corrupt stretch (a record whose checksum fails, a length that cannot be followed, a closed segment
/// cut short) is skipped up to the next valid record: counted in `yaffle_log_corrupt_regions` and
/// `yaffle_log_cursor_skipped_corrupt_bytes`, and logged with its position. Reading never stops on it
/// and never drops the valid records around it.
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
    /// File offset `reader` stands at, `None` when unknown.
    offset: Option<u64>,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, cursor: Option<CursorName>, position: u64) -> Self {
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
    pub async fn next(&mut self, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        self.skip_dropped();
        if *self.end.borrow_and_update() <= self.position {
            let position = self.position;
            let waited = tokio::time::timeout(wait, self.end.wait_for(|&end| end > position)).await;
            match waited {
                Err(_) => return Ok(Vec::new()),
                Ok(Err(_)) => return Err(LogError::ShuttingDown),
                Ok(Ok(_)) => {}
            }
        }
        let end = *self.end.borrow();
        let mut open = self.open.take();
        let mut position = self.position;
        let shared = Arc::clone(&self.shared);
        let cursor = self.cursor;
        let (records, open) = tokio::task::spawn_blocking(move || {
            let records = read_records(&shared, cursor, &mut open, &mut position, end, max_bytes);
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
    cursor: Option<CursorName>,
    open: &mut Option<OpenSegment>,
    position: &mut u64,
    end: u64,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let mut records = Vec::new();
    let mut bytes = 0usize;
    while *position < end && (records.is_empty() || bytes < max_bytes) {
        let seg = segment_for(shared, open, *position)?;
        let stop = seg.limit.unwrap_or(end);
        if *position >= stop {
            *open = None;
            continue;
        }
        let want = *position - seg.base;
        let path = segment::path(&shared.dir, seg.base);
        if seg.offset != Some(want) {
            seg.reader.seek(SeekFrom::Start(want)).map_err(LogError::io(&path))?;
        }
        match segment::read_valid(&mut seg.reader, stop - *position).map_err(LogError::io(&path))? {
            Some((h, payload)) => {
                let next = *position + h.record_bytes();
                seg.offset = Some(want + h.record_bytes());
                bytes += payload.len();
                records.push(Record { position: *position, next, ingest_time: h.time, payload });
                *position = next;
            }
            None => {
                seg.offset = None;
                let resume = seg.base + segment::resync(&path, want, stop - seg.base).map_err(LogError::io(&path))?;
                shared.metrics.corrupt_regions.inc();
                shared.metrics.add_cursor_skipped_bytes(cursor, resume - *position);
                tracing::error!(
                    cursor = cursor.map_or("none", CursorName::as_str),
                    segment = %path.display(),
                    from = *position,
                    to = resume,
                    bytes = resume - *position,
                    "skipped a corrupt stretch of the log"
                );
                *position = resume;
            }
        }
    }
    Ok(records)
}

fn segment_for<'a>(
    shared: &Shared,
    open: &'a mut Option<OpenSegment>,
    position: u64,
) -> Result<&'a mut OpenSegment, LogError> {
    let fits = open.as_ref().is_some_and(|s| s.base <= position && s.limit.is_none_or(|l| position < l));
    if !fits {
        let segments = shared.segments.read().expect("segments lock");
        let idx = segments.partition_point(|s| s.base <= position);
        if idx == 0 {
            return Err(LogError::BadPosition { position, reason: "before the start of the log" });
        }
        let base = segments[idx - 1].base;
        let limit = segments.get(idx).map(|s| s.base);
        drop(segments);
        let path = segment::path(&shared.dir, base);
        let file = File::open(&path).map_err(LogError::io(&path))?;
        *open = Some(OpenSegment { base, limit, reader: BufReader::with_capacity(1 << 20, file), offset: Some(0) });
    }
    let seg = open.as_mut().expect("just opened");
    if seg.limit.is_none() {
        // The active segment may have been closed since it was opened.
        let segments = shared.segments.read().expect("segments lock");
        seg.limit = segments.iter().map(|s| s.base).find(|&b| b > seg.base);
    }
    Ok(seg)
}
