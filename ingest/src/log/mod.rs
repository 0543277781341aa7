//! The durable log: every accepted batch is appended here before ingest acknowledges it, and each sink
//! reads it through its own cursor.
//!
//! # Guarantees
//! - **Acknowledged means durable.** [`Log::append`] returns only after the record is written (and, with
//!   the default [`FsyncPolicy::Always`], fsynced). Appends that arrive together share one write and one
//!   fsync (group commit). See [`FsyncPolicy`] for the loss window of the other policies.
//! - **Crash recovery.** On open, the last segment is scanned and a torn or corrupt tail (a write cut by a
//!   crash) is truncated; every acknowledged record is before it.
//! - **Independent cursors.** The store, kafka and alert cursors are persisted separately and advance at
//!   their sinks' pace. A segment is deleted only when every enabled cursor has passed it.
//! - **Disk budget per cursor.** A cursor further behind than its budget either blocks appends
//!   ([`OverflowPolicy::Block`], ingest answers 503) or loses its own oldest segments
//!   ([`OverflowPolicy::DropOldest`], counted in `yaffle_ingest_cursor_dropped_bytes_total` and logged).
//! - **Seek by time.** Ingest times never decrease along the log, so [`Log::position_at_time`] finds the
//!   first record appended at or after an instant; standalone downsampling replays from there.

mod config;
mod cursor;
mod reader;
mod segment;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

pub use config::{CursorConfig, CursorsConfig, FsyncPolicy, LogConfig, OverflowPolicy};
pub use cursor::CursorName;
pub use reader::LogReader;
pub use segment::Record;

use crate::error::IngestError;
use crate::metrics::Metrics;
use cursor::CursorState;
use segment::SegmentInfo;

/// Most appends written together in one group commit.
const MAX_GROUP: usize = 4096;

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Position of its first byte.
    pub position: u64,
    /// Position after it.
    pub next: u64,
}

struct AppendRequest {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// The durable log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    tx: std::sync::Mutex<Option<mpsc::Sender<AppendRequest>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    segments: RwLock<Vec<SegmentInfo>>,
    /// End of the written log; readers wait on it.
    end: watch::Sender<u64>,
    cursors: Vec<CursorState>,
    metrics: Arc<Metrics>,
}

impl Log {
    /// Opens the log in `dir` (relative to `data_dir`), recovering from a crash, and starts its writer.
    pub fn open(data_dir: &Path, config: &LogConfig, metrics: Arc<Metrics>) -> Result<Self, IngestError> {
        config.validate().map_err(IngestError::Config)?;
        let dir = data_dir.join(&config.dir);
        fs::create_dir_all(&dir).map_err(IngestError::io(&dir))?;
        let mut bases = segment::list(&dir).map_err(IngestError::io(&dir))?;
        if bases.is_empty() {
            File::create(segment::path(&dir, 0)).map_err(IngestError::io(&dir))?;
            bases.push(0);
        }
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::path(&dir, base);
            let first_time = if i + 1 == bases.len() {
                segment::recover(&path).map_err(IngestError::io(&path))?.1
            } else {
                segment::first_time(&path).map_err(IngestError::io(&path))?
            };
            segments.push(SegmentInfo { base, first_time });
        }
        let last = *bases.last().expect("at least one segment");
        let last_path = segment::path(&dir, last);
        let end = last + fs::metadata(&last_path).map_err(IngestError::io(&last_path))?.len();
        let start = bases[0];
        let mut cursors = Vec::with_capacity(3);
        for name in CursorName::ALL {
            let cfg = match name {
                CursorName::Store => &config.cursors.store,
                CursorName::Kafka => &config.cursors.kafka,
                CursorName::Alert => &config.cursors.alert,
            };
            let state = CursorState::load(&dir, name, cfg.clone(), start).map_err(IngestError::io(&dir))?;
            // A cursor can point past the end after a torn tail was cut, or before the start after its
            // segments were deleted while it was disabled.
            let pos = state.committed.load(Ordering::Acquire).clamp(start, end);
            state.committed.store(pos, Ordering::Release);
            metrics.cursor_position(name).set(pos as i64);
            cursors.push(state);
        }
        metrics.log_end.set(end as i64);
        metrics.log_segments.set(segments.len() as i64);
        let shared = Arc::new(Shared {
            dir,
            segment_bytes: config.segment_bytes.as_u64(),
            segments: RwLock::new(segments),
            end: watch::Sender::new(end),
            cursors,
            metrics,
        });
        let file = OpenOptions::new().append(true).open(&last_path).map_err(IngestError::io(&last_path))?;
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let fsync = config.fsync;
        let writer = std::thread::Builder::new()
            .name("yaffle-log-writer".into())
            .spawn(move || Writer { shared: writer_shared, file, segment_base: last, fsync }.run(rx))
            .map_err(IngestError::io("log writer thread"))?;
        tracing::info!(dir = %shared.dir.display(), end, segments = bases.len(), "log opened");
        Ok(Self { shared, tx: std::sync::Mutex::new(Some(tx)), writer: std::sync::Mutex::new(Some(writer)) })
    }

    /// Appends one record and returns once it is durable (see [`FsyncPolicy`]). Fails with
    /// [`IngestError::Backpressure`] when a blocking cursor is over its disk budget.
    pub async fn append(&self, payload: Vec<u8>) -> Result<Appended, IngestError> {
        self.enforce_budgets()?;
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.lock().expect("log sender lock").clone().ok_or(IngestError::ShuttingDown)?;
        tx.send(AppendRequest { payload, reply }).map_err(|_| IngestError::ShuttingDown)?;
        rx.await.map_err(|_| IngestError::ShuttingDown)?.map_err(IngestError::LogWrite)
    }

    /// The end of the log: the position the next record will get.
    pub fn end(&self) -> u64 {
        *self.shared.end.borrow()
    }

    /// The oldest position still on disk.
    pub fn start(&self) -> u64 {
        self.shared.segments.read().expect("segments lock")[0].base
    }

    /// The committed position of a cursor.
    pub fn cursor_position(&self, name: CursorName) -> u64 {
        self.shared.cursors[name.index()].committed.load(Ordering::Acquire)
    }

    /// Whether a cursor is enabled.
    pub fn cursor_enabled(&self, name: CursorName) -> bool {
        self.shared.cursors[name.index()].config.enabled
    }

    /// A reader that starts at the cursor's committed position.
    pub fn reader(&self, name: CursorName) -> LogReader {
        LogReader::new(Arc::clone(&self.shared), Some(name), self.cursor_position(name))
    }

    /// A reader outside any cursor (replay, backfill, tests), starting at `position`.
    pub fn reader_at(&self, position: u64) -> LogReader {
        LogReader::new(Arc::clone(&self.shared), None, position)
    }

    /// Persists a cursor's position and deletes segments every enabled cursor has passed.
    pub fn commit(&self, name: CursorName, position: u64) -> Result<(), IngestError> {
        self.commit_with(name, position, None)
    }

    /// Like [`Log::commit`], recording `metadata` (one line) with the position, as a Kafka offset
    /// commit can: standalone downsampling keeps its emitted watermark there.
    pub fn commit_with_metadata(&self, name: CursorName, position: u64, metadata: &str) -> Result<(), IngestError> {
        debug_assert!(!metadata.contains('\n'), "cursor metadata is one line");
        self.commit_with(name, position, Some(metadata))
    }

    /// The metadata of a cursor's last commit ([`Log::commit_with_metadata`]), empty if none.
    pub fn cursor_metadata(&self, name: CursorName) -> String {
        self.shared.cursors[name.index()].metadata.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit_with(&self, name: CursorName, position: u64, metadata: Option<&str>) -> Result<(), IngestError> {
        let cursor = &self.shared.cursors[name.index()];
        cursor.persist(position, metadata).map_err(IngestError::io(&self.shared.dir))?;
        self.shared.metrics.cursor_position(name).set(cursor.committed.load(Ordering::Acquire) as i64);
        self.shared.update_lag();
        self.shared.delete_passed_segments()
    }

    /// The position of the first record appended at or after `time` (nanoseconds); the end of the log if
    /// there is none, the start of the log if everything on disk is later.
    pub fn position_at_time(&self, time: i64) -> Result<u64, IngestError> {
        let segments = self.shared.segments.read().expect("segments lock").clone();
        let idx = segments.partition_point(|s| s.first_time.is_some_and(|t| t <= time));
        if idx == 0 {
            return Ok(segments[0].base);
        }
        let seg = &segments[idx - 1];
        let path = segment::path(&self.shared.dir, seg.base);
        match segment::find_time(&path, seg.base, time).map_err(IngestError::io(&path))? {
            Some(pos) => Ok(pos.min(self.end())),
            None => Ok(segments.get(idx).map_or_else(|| self.end(), |s| s.base)),
        }
    }

    /// Stops the writer after the appends already sent, and waits for it.
    pub fn shutdown(&self) {
        self.tx.lock().expect("log sender lock").take();
        if let Some(w) = self.writer.lock().expect("log writer lock").take() {
            let _ = w.join();
        }
    }

    fn enforce_budgets(&self) -> Result<(), IngestError> {
        let end = self.end();
        for c in self.shared.cursors.iter().filter(|c| c.config.enabled) {
            let budget = c.config.disk_budget.as_u64();
            let lag = end.saturating_sub(c.effective());
            if lag < budget {
                continue;
            }
            match c.config.policy {
                OverflowPolicy::Block => {
                    self.shared.metrics.cursor_blocked(c.name).inc();
                    return Err(IngestError::Backpressure { cursor: c.name, lag, budget });
                }
                OverflowPolicy::DropOldest => self.shared.drop_oldest(c, end, budget)?,
            }
        }
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    /// Moves a `drop_oldest` cursor's floor forward by whole segments until it is under budget.
    fn drop_oldest(&self, c: &CursorState, end: u64, budget: u64) -> Result<(), IngestError> {
        let from = c.effective();
        let floor = {
            let segments = self.segments.read().expect("segments lock");
            segments.iter().map(|s| s.base).find(|&b| b >= from && end - b < budget).unwrap_or(end)
        };
        if floor > from {
            c.floor.fetch_max(floor, Ordering::AcqRel);
            self.metrics.cursor_dropped_bytes(c.name).inc_by(floor - from);
            tracing::warn!(cursor = %c.name, from, to = floor, dropped_bytes = floor - from, "cursor over its disk budget: dropped its oldest data");
            self.delete_passed_segments()?;
        }
        Ok(())
    }

    fn update_lag(&self) {
        let end = *self.end.borrow();
        for c in &self.cursors {
            let lag = if c.config.enabled { end.saturating_sub(c.effective()) } else { 0 };
            self.metrics.cursor_lag(c.name).set(lag as i64);
        }
    }

    fn delete_passed_segments(&self) -> Result<(), IngestError> {
        let min = self.cursors.iter().filter(|c| c.config.enabled).map(CursorState::effective).min();
        let min = min.unwrap_or(u64::MAX);
        let mut segments = self.segments.write().expect("segments lock");
        // Never delete the active (last) segment; a segment ends where the next begins.
        while segments.len() > 1 && segments[1].base <= min {
            let old = segments.remove(0);
            let path = segment::path(&self.dir, old.base);
            fs::remove_file(&path).map_err(IngestError::io(&path))?;
            tracing::debug!(segment = old.base, "deleted a log segment every cursor has passed");
        }
        self.metrics.log_segments.set(segments.len() as i64);
        Ok(())
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    segment_base: u64,
    fsync: FsyncPolicy,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<AppendRequest>) {
        let mut group = Vec::new();
        let mut buf = Vec::new();
        let mut last_time = i64::MIN;
        let mut last_sync = Instant::now();
        let mut dirty = false;
        loop {
            let first = match self.fsync {
                FsyncPolicy::Interval(every) if dirty => {
                    match rx.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                        Ok(r) => r,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sync(&mut last_sync, &mut dirty);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let result = self.write_group(&mut group, &mut buf, &mut last_time);
            match result {
                Ok(()) => {
                    dirty = true;
                    if self.fsync == FsyncPolicy::Always
                        || matches!(self.fsync, FsyncPolicy::Interval(d) if last_sync.elapsed() >= d)
                    {
                        self.sync(&mut last_sync, &mut dirty);
                    }
                    let mut pos = *self.shared.end.borrow();
                    let mut replies = Vec::with_capacity(group.len());
                    for r in group.drain(..) {
                        let next = pos + segment::HEADER_BYTES + r.payload.len() as u64;
                        replies.push((r.reply, Appended { position: pos, next }));
                        pos = next;
                    }
                    self.shared.end.send_replace(pos);
                    self.shared.metrics.log_end.set(pos as i64);
                    self.shared.update_lag();
                    for (reply, appended) in replies {
                        let _ = reply.send(Ok(appended));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "log append failed");
                    self.shared.metrics.log_errors.inc();
                    for r in group.drain(..) {
                        let _ = r.reply.send(Err(e.clone()));
                    }
                }
            }
        }
        if dirty && self.fsync != FsyncPolicy::Never {
            let _ = self.file.sync_data();
        }
    }

    fn sync(&mut self, last_sync: &mut Instant, dirty: &mut bool) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, "log fsync failed");
            self.shared.metrics.log_errors.inc();
        }
        self.shared.metrics.log_fsyncs.inc();
        *last_sync = Instant::now();
        *dirty = false;
    }

    /// Writes a group of records; on failure the segment is cut back so no partial record stays.
    fn write_group(
        &mut self,
        group: &mut [AppendRequest],
        buf: &mut Vec<u8>,
        last_time: &mut i64,
    ) -> Result<(), String> {
        let end = *self.shared.end.borrow();
        if end - self.segment_base >= self.shared.segment_bytes {
            self.roll(end).map_err(|e| format!("rolling the log segment: {e}"))?;
        }
        let time = now_ns().max(*last_time);
        *last_time = time;
        buf.clear();
        for r in group.iter() {
            segment::encode(buf, time, &r.payload);
        }
        if let Err(e) = self.file.write_all(buf) {
            let _ = self.file.set_len(end - self.segment_base);
            return Err(format!("writing the log: {e}"));
        }
        {
            let mut segments = self.shared.segments.write().expect("segments lock");
            let last = segments.last_mut().expect("a segment");
            last.first_time.get_or_insert(time);
        }
        self.shared.metrics.log_appends.inc_by(group.len() as u64);
        self.shared.metrics.log_bytes.inc_by(buf.len() as u64);
        Ok(())
    }

    fn roll(&mut self, end: u64) -> std::io::Result<()> {
        if self.fsync != FsyncPolicy::Never {
            self.file.sync_data()?;
        }
        let path = segment::path(&self.shared.dir, end);
        self.file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        if self.fsync != FsyncPolicy::Never {
            File::open(&self.shared.dir)?.sync_all()?;
        }
        self.segment_base = end;
        self.shared.segments.write().expect("segments lock").push(SegmentInfo { base: end, first_time: None });
        // Cursors may all have passed the closed segment already (or none may be enabled).
        self.shared.delete_passed_segments().map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}
