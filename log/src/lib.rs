//! Yaffle's durable local log: every accepted batch is appended here before ingest acknowledges it,
//! and each sink reads it through its own cursor.
//!
//! Main types: [`Log`] (appends, cursors, seek by time), [`LogReader`] (records from a position),
//! [`LogConfig`], [`LogError`], [`LogMetrics`], the [`durable`] file-system calls it rests on, and the
//! [`sink`] runtime every consumer of the log runs on.
//!
//! # Guarantees
//! - **Acknowledged means durable.** [`Log::append`] returns only after the record is written and, with
//!   the default [`FsyncPolicy::Always`], fsynced. Appends that arrive together share one write and one
//!   fsync (group commit). A `kill -9` loses nothing acknowledged under any policy; a power cut loses
//!   nothing under `always`, at most the last interval under `interval`, and what the kernel had not
//!   written under `never`.
//! - **A failed fsync fails the writes.** The appends it covered get an error, never an acknowledgement,
//!   and the log is *poisoned*: every later append fails with [`LogError::Poisoned`] naming the cause
//!   (ingest answers 503, `/health` fails, `yaffle_log_poisoned` is 1) until the log is reopened, since the
//!   kernel may have dropped the pages it could not write (PostgreSQL's fsync lesson). Reopening recovers
//!   what is really on disk.
//! - **A full disk is reported as such** ([`LogError::NoSpace`], HTTP 507): the failed group is cut back,
//!   nothing of it is acknowledged, and appends succeed again once there is room.
//! - **The largest record** an append accepts is `log.max_record_bytes` (at most [`MAX_RECORD_BYTES`], the
//!   largest a reader accepts), refused at append with [`LogError::RecordTooLarge`] (HTTP 413): nothing
//!   acknowledged is ever read back as corruption for its size.
//! - **Recovery.** On open the last segment is scanned. What follows its last valid record is a torn
//!   tail (a write cut by a crash, never acknowledged under `always`) and is cut. An invalid stretch with
//!   valid records after it is corruption, not a torn tail: it is kept and logged, so the records after
//!   it survive.
//! - **Corruption is skipped and counted, never silently.** A reader that meets an invalid record
//!   (checksum, length, a closed segment cut short) resumes at the next valid one, counts the stretch in
//!   `yaffle_log_corrupt_regions` and, per cursor, `yaffle_log_cursor_skipped_corrupt_bytes`, and logs its
//!   position. One flipped byte costs the records it hit, no more, and stops no cursor.
//! - **Renames and creations are durable.** Cursor files are replaced atomically with the directory
//!   fsynced after the rename ([`durable::write_atomically`]); a new segment's directory entry is fsynced
//!   before it takes records, and a roll that failed there is retried by the next append.
//! - **Independent cursors.** The store, kafka, alert and downsample cursors are persisted separately and advance at
//!   their sinks' pace. A segment is deleted only when every enabled cursor has passed it.
//! - **Disk budget per cursor.** A cursor further behind than its budget either blocks appends
//!   ([`OverflowPolicy::Block`], ingest answers 503) or loses its own oldest segments
//!   ([`OverflowPolicy::DropOldest`], counted in `yaffle_log_cursor_dropped_bytes` and logged).
//! - **Seek by time.** Ingest times never decrease along the log, so [`Log::position_at_time`] finds the
//!   first record appended at or after an instant; standalone downsampling replays from there.
//! - **One process, one format.** The directory is locked while a log has it open (a second process
//!   is refused) and carries its data format; a directory of another format is refused ([`dir`]).

mod config;
mod cursor;
pub mod dir;
pub mod durable;
mod error;
#[cfg(test)]
mod fault_tests;
mod metrics;
mod reader;
mod segment;
pub mod sink;
#[cfg(test)]
mod sink_tests;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

pub use config::{CursorConfig, CursorsConfig, FsyncPolicy, LogConfig, OverflowPolicy};
pub use cursor::CursorName;
pub use error::LogError;
pub use metrics::LogMetrics;
pub use reader::LogReader;
pub use segment::{MAX_RECORD_BYTES, Record};

use cursor::CursorState;
use durable::{OsStorage, Storage};
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
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

/// The durable log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    /// The directory's lock, released when the log is dropped.
    _lock: File,
    tx: std::sync::Mutex<Option<mpsc::Sender<AppendRequest>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    max_record_bytes: u64,
    segments: RwLock<Vec<SegmentInfo>>,
    /// End of the written log; readers wait on it.
    end: watch::Sender<u64>,
    cursors: Vec<CursorState>,
    metrics: Arc<LogMetrics>,
    storage: Arc<dyn Storage>,
    /// Set once an fsync failed: the cause, and no append is taken any more.
    poisoned: OnceLock<Arc<str>>,
}

impl Log {
    /// Opens the log in `config.dir` (relative to `data_dir`), recovering from a crash, and starts its
    /// writer.
    pub fn open(data_dir: &Path, config: &LogConfig, metrics: Arc<LogMetrics>) -> Result<Self, LogError> {
        Self::open_with(data_dir, config, metrics, Arc::new(OsStorage))
    }

    /// [`Log::open`] with the file-system calls made through `storage` (tests fail them on purpose).
    pub fn open_with(
        data_dir: &Path,
        config: &LogConfig,
        metrics: Arc<LogMetrics>,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, LogError> {
        config.validate().map_err(LogError::Config)?;
        let dir = data_dir.join(&config.dir);
        fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
        let lock = dir::lock(&dir)?;
        let mut bases = segment::list(&dir).map_err(LogError::io(&dir))?;
        dir::check_format(&dir, !bases.is_empty(), config.upgrade_from_format_1)?;
        if bases.is_empty() {
            File::create(segment::path(&dir, 0)).map_err(LogError::io(&dir))?;
            storage.sync_dir(&dir).map_err(LogError::io(&dir))?;
            bases.push(0);
        }
        let mut segments = Vec::with_capacity(bases.len());
        let mut last_len = 0;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::path(&dir, base);
            let first_time = if i + 1 == bases.len() {
                let recovered = segment::recover(&path).map_err(LogError::io(&path))?;
                last_len = recovered.len;
                recovered.first_time
            } else {
                segment::first_time(&path).map_err(LogError::io(&path))?
            };
            segments.push(SegmentInfo { base, first_time });
        }
        let last = *bases.last().expect("at least one segment");
        let last_path = segment::path(&dir, last);
        let end = last + last_len;
        let start = bases[0];
        let mut cursors = Vec::with_capacity(3);
        for name in CursorName::ALL {
            let cfg = match name {
                CursorName::Store => &config.cursors.store,
                CursorName::Kafka => &config.cursors.kafka,
                CursorName::Alert => &config.cursors.alert,
                CursorName::Downsample => &config.cursors.downsample,
            };
            let state = CursorState::load(&dir, name, cfg.clone(), start).map_err(LogError::io(&dir))?;
            // A cursor can point past the end after a torn tail was cut, or before the start after its
            // segments were deleted while it was disabled.
            let pos = state.committed.load(Ordering::Acquire).clamp(start, end);
            state.committed.store(pos, Ordering::Release);
            metrics.cursor_position(name).set(pos as i64);
            cursors.push(state);
        }
        metrics.end.set(end as i64);
        metrics.segments.set(segments.len() as i64);
        metrics.poisoned.set(0);
        let shared = Arc::new(Shared {
            dir,
            segment_bytes: config.segment_bytes.as_u64(),
            max_record_bytes: config.max_record_bytes.as_u64(),
            segments: RwLock::new(segments),
            end: watch::Sender::new(end),
            cursors,
            metrics,
            storage,
            poisoned: OnceLock::new(),
        });
        let file = OpenOptions::new().append(true).open(&last_path).map_err(LogError::io(&last_path))?;
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let fsync = config.fsync;
        let writer = std::thread::Builder::new()
            .name("yaffle-log-writer".into())
            .spawn(move || Writer { shared: writer_shared, file, segment_base: last, fsync }.run(rx))
            .map_err(LogError::io(&shared.dir))?;
        tracing::info!(dir = %shared.dir.display(), end, segments = bases.len(), "log opened");
        Ok(Self {
            shared,
            _lock: lock,
            tx: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Appends one record and returns once it is durable (see [`FsyncPolicy`]). Fails, with nothing
    /// acknowledged, when the record is larger than `log.max_record_bytes`, when a blocking cursor is
    /// over its disk budget, when the disk is full, and once the log is poisoned.
    pub async fn append(&self, payload: Vec<u8>) -> Result<Appended, LogError> {
        let size = payload.len() as u64;
        if size > self.shared.max_record_bytes {
            self.shared.metrics.refused_too_large.inc();
            return Err(LogError::RecordTooLarge { size, limit: self.shared.max_record_bytes });
        }
        self.health()?;
        self.enforce_budgets()?;
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.lock().expect("log sender lock").clone().ok_or(LogError::ShuttingDown)?;
        tx.send(AppendRequest { payload, reply }).map_err(|_| LogError::ShuttingDown)?;
        rx.await.map_err(|_| LogError::ShuttingDown)?
    }

    /// `Ok` while the log takes appends; [`LogError::Poisoned`] with the cause once an fsync failed.
    pub fn health(&self) -> Result<(), LogError> {
        match self.shared.poisoned.get() {
            Some(cause) => Err(LogError::Poisoned { cause: Arc::clone(cause) }),
            None => Ok(()),
        }
    }

    /// The largest record [`Log::append`] accepts.
    pub fn max_record_bytes(&self) -> u64 {
        self.shared.max_record_bytes
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
    pub fn commit(&self, name: CursorName, position: u64) -> Result<(), LogError> {
        self.commit_with(name, position, None)
    }

    /// Like [`Log::commit`], recording `metadata` (one line) with the position, as a Kafka offset
    /// commit can: standalone downsampling keeps its emitted watermark there.
    pub fn commit_with_metadata(&self, name: CursorName, position: u64, metadata: &str) -> Result<(), LogError> {
        debug_assert!(!metadata.contains('\n'), "cursor metadata is one line");
        self.commit_with(name, position, Some(metadata))
    }

    /// The metadata of a cursor's last commit ([`Log::commit_with_metadata`]), empty if none.
    pub fn cursor_metadata(&self, name: CursorName) -> String {
        self.shared.cursors[name.index()].metadata.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit_with(&self, name: CursorName, position: u64, metadata: Option<&str>) -> Result<(), LogError> {
        let cursor = &self.shared.cursors[name.index()];
        cursor.persist(position, metadata).map_err(LogError::io(&self.shared.dir))?;
        self.shared.metrics.cursor_position(name).set(cursor.committed.load(Ordering::Acquire) as i64);
        self.shared.update_lag();
        self.shared.delete_passed_segments()
    }

    /// The position of the first record appended at or after `time` (nanoseconds); the end of the log if
    /// there is none, the start of the log if everything on disk is later.
    pub fn position_at_time(&self, time: i64) -> Result<u64, LogError> {
        let segments = self.shared.segments.read().expect("segments lock").clone();
        let idx = segments.partition_point(|s| s.first_time.is_some_and(|t| t <= time));
        if idx == 0 {
            return Ok(segments[0].base);
        }
        let seg = &segments[idx - 1];
        let path = segment::path(&self.shared.dir, seg.base);
        match segment::find_time(&path, seg.base, time).map_err(LogError::io(&path))? {
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

    fn enforce_budgets(&self) -> Result<(), LogError> {
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
                    return Err(LogError::Backpressure { cursor: c.name, lag, budget });
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
    fn drop_oldest(&self, c: &CursorState, end: u64, budget: u64) -> Result<(), LogError> {
        let from = c.effective();
        let floor = {
            let segments = self.segments.read().expect("segments lock");
            segments.iter().map(|s| s.base).find(|&b| b >= from && end - b < budget).unwrap_or(end)
        };
        if floor > from {
            c.floor.fetch_max(floor, Ordering::AcqRel);
            self.metrics.add_cursor_dropped_bytes(c.name, floor - from);
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

    fn delete_passed_segments(&self) -> Result<(), LogError> {
        let min = self.cursors.iter().filter(|c| c.config.enabled).map(CursorState::effective).min();
        let min = min.unwrap_or(u64::MAX);
        let mut segments = self.segments.write().expect("segments lock");
        // Never delete the active (last) segment; a segment ends where the next begins.
        while segments.len() > 1 && segments[1].base <= min {
            let path = segment::path(&self.dir, segments[0].base);
            fs::remove_file(&path).map_err(LogError::io(&path))?;
            let old = segments.remove(0);
            tracing::debug!(segment = old.base, "deleted a log segment every cursor has passed");
        }
        self.metrics.segments.set(segments.len() as i64);
        Ok(())
    }

    /// Poisons the log after a failed fsync (the first cause is kept) and returns the error to answer.
    fn poison(&self, cause: String) -> LogError {
        let cause = Arc::clone(self.poisoned.get_or_init(|| {
            tracing::error!(%cause, "log poisoned: an fsync failed; appends are refused until the log is reopened");
            Arc::from(cause)
        }));
        self.metrics.poisoned.set(1);
        LogError::Poisoned { cause }
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    segment_base: u64,
    fsync: FsyncPolicy,
}

/// When the writer last fsynced and whether it wrote since.
struct SyncState {
    last: Instant,
    dirty: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<AppendRequest>) {
        let mut group = Vec::new();
        let mut buf = Vec::new();
        let mut last_time = i64::MIN;
        let mut sync = SyncState { last: Instant::now(), dirty: false };
        loop {
            let first = match self.fsync {
                FsyncPolicy::Interval(every) if sync.dirty => {
                    match rx.recv_timeout(every.saturating_sub(sync.last.elapsed())) {
                        Ok(r) => r,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // Already acknowledged: a failure can only poison (the policy's loss window).
                            let _ = self.sync(&mut sync);
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
            match self.commit_group(&group, &mut buf, &mut last_time, &mut sync) {
                Ok(()) => {
                    let mut pos = *self.shared.end.borrow();
                    let mut replies = Vec::with_capacity(group.len());
                    for r in group.drain(..) {
                        let next = pos + segment::HEADER_BYTES + r.payload.len() as u64;
                        replies.push((r.reply, Appended { position: pos, next }));
                        pos = next;
                    }
                    self.shared.end.send_replace(pos);
                    self.shared.metrics.end.set(pos as i64);
                    self.shared.update_lag();
                    for (reply, appended) in replies {
                        let _ = reply.send(Ok(appended));
                    }
                }
                Err(e) => {
                    // Poisoning logs once by itself.
                    if !matches!(e, LogError::Poisoned { .. }) {
                        tracing::error!(error = %e, appends = group.len(), "log append failed");
                    }
                    self.shared.metrics.errors.inc();
                    for r in group.drain(..) {
                        let _ = r.reply.send(Err(e.clone()));
                    }
                }
            }
        }
        if sync.dirty && self.fsync != FsyncPolicy::Never && self.shared.poisoned.get().is_none() {
            let _ = self.sync(&mut sync);
        }
    }

    /// Writes a group and, as the policy says, fsyncs it: `Ok` means the group may be acknowledged.
    fn commit_group(
        &mut self,
        group: &[AppendRequest],
        buf: &mut Vec<u8>,
        last_time: &mut i64,
        sync: &mut SyncState,
    ) -> Result<(), LogError> {
        if let Some(cause) = self.shared.poisoned.get() {
            return Err(LogError::Poisoned { cause: Arc::clone(cause) });
        }
        self.write_group(group, buf, last_time)?;
        sync.dirty = true;
        let due = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => sync.last.elapsed() >= every,
            FsyncPolicy::Never => false,
        };
        if due { self.sync(sync) } else { Ok(()) }
    }

    fn sync(&mut self, sync: &mut SyncState) -> Result<(), LogError> {
        self.shared.metrics.fsyncs.inc();
        sync.last = Instant::now();
        sync.dirty = false;
        self.shared.storage.sync_file(&self.file).map_err(|e| {
            let path = segment::path(&self.shared.dir, self.segment_base);
            self.shared.poison(format!("fsync of {}: {e}", path.display()))
        })
    }

    /// Writes a group of records; on failure the segment is cut back so no partial record stays.
    fn write_group(&mut self, group: &[AppendRequest], buf: &mut Vec<u8>, last_time: &mut i64) -> Result<(), LogError> {
        let end = *self.shared.end.borrow();
        if end - self.segment_base >= self.shared.segment_bytes {
            self.roll(end)?;
        }
        let time = now_ns().max(*last_time);
        *last_time = time;
        buf.clear();
        for r in group {
            segment::encode(buf, time, &r.payload);
        }
        let path = segment::path(&self.shared.dir, self.segment_base);
        if let Err(e) = self.shared.storage.write(&mut self.file, buf) {
            // Positions are file offsets: a partial record left in place would shift every later one.
            if let Err(cut) = self.file.set_len(end - self.segment_base) {
                return Err(self
                    .shared
                    .poison(format!("cutting back {} after a failed write ({e}): {cut}", path.display())));
            }
            return Err(LogError::io(&path)(e));
        }
        {
            let mut segments = self.shared.segments.write().expect("segments lock");
            let last = segments.last_mut().expect("a segment");
            last.first_time.get_or_insert(time);
        }
        self.shared.metrics.appends.inc_by(group.len() as u64);
        self.shared.metrics.bytes.inc_by(buf.len() as u64);
        Ok(())
    }

    /// Closes the active segment and starts the next at `end`. Safe to retry: a roll that failed after
    /// creating the file finds it empty and goes on.
    fn roll(&mut self, end: u64) -> Result<(), LogError> {
        let storage = Arc::clone(&self.shared.storage);
        if self.fsync != FsyncPolicy::Never {
            storage.sync_file(&self.file).map_err(|e| {
                let path = segment::path(&self.shared.dir, self.segment_base);
                self.shared.poison(format!("fsync of {}: {e}", path.display()))
            })?;
        }
        let path = segment::path(&self.shared.dir, end);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(LogError::io(&path))?;
        if file.metadata().map_err(LogError::io(&path))?.len() != 0 {
            return Err(LogError::Io {
                path,
                source: Arc::new(std::io::Error::other("a new segment's file already holds data")),
            });
        }
        if self.fsync != FsyncPolicy::Never {
            storage.sync_dir(&self.shared.dir).map_err(LogError::io(&self.shared.dir))?;
        }
        self.file = file;
        self.segment_base = end;
        self.shared.segments.write().expect("segments lock").push(SegmentInfo { base: end, first_time: None });
        // Cursors may all have passed the closed segment already (or none may be enabled).
        self.shared.delete_passed_segments()
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}
