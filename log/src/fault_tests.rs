//! The log under injected faults: failing fsyncs and directory fsyncs through the [`Storage`] seam, a
//! full disk on a real small tmpfs, flipped bytes and cut segments. Each test checks that nothing
//! acknowledged is lost and that what is lost (only what the fault hit) is counted.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytesize::ByteSize;
use yaffle_core::ErrorStatus;

use super::*;
use crate::tests::{config, read_all};

/// The real file system, with switches that make one kind of call fail.
#[derive(Debug, Default)]
struct Faulty {
    fail_sync: AtomicBool,
    fail_dir_sync: AtomicBool,
}

impl Storage for Faulty {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO, what a dying disk answers
        }
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fail_dir_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        durable::sync_dir(dir)
    }
}

fn payloads(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.clone()).collect()
}

#[tokio::test]
async fn a_failed_fsync_fails_the_write_and_poisons_the_log_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Faulty::default());
    let metrics = Arc::new(LogMetrics::default());
    let log = Log::open_with(dir.path(), &LogConfig::default(), Arc::clone(&metrics), storage.clone()).unwrap();
    log.append(b"acknowledged".to_vec()).await.unwrap();

    storage.fail_sync.store(true, Ordering::SeqCst);
    let e = log.append(b"not acknowledged".to_vec()).await.unwrap_err();
    assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
    assert_eq!(e.http_status(), 503);
    assert!(e.to_string().contains("fsync of") && e.to_string().contains("Input/output error"), "{e}");
    assert_eq!(metrics.poisoned.get(), 1);

    // The disk works again, but what the kernel dropped cannot be known: still refused.
    storage.fail_sync.store(false, Ordering::SeqCst);
    let again = log.append(b"later".to_vec()).await.unwrap_err();
    assert!(matches!(again, LogError::Poisoned { .. }), "{again}");
    assert!(log.health().is_err());
    assert_eq!(payloads(&read_all(&log, 0).await), [b"acknowledged".to_vec()], "readers see only acknowledged records");
    drop(log);

    let log = Log::open(dir.path(), &LogConfig::default(), Arc::new(LogMetrics::default())).unwrap();
    log.health().unwrap();
    log.append(b"after reopening".to_vec()).await.unwrap();
    let records = payloads(&read_all(&log, 0).await);
    assert_eq!(records.first().unwrap(), b"acknowledged");
    assert_eq!(records.last().unwrap(), b"after reopening");
}

#[tokio::test]
async fn a_failed_interval_fsync_poisons_the_log_too() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Faulty::default());
    let cfg = LogConfig { fsync: FsyncPolicy::Interval(Duration::from_millis(20)), ..LogConfig::default() };
    let log = Log::open_with(dir.path(), &cfg, Arc::new(LogMetrics::default()), storage.clone()).unwrap();
    storage.fail_sync.store(true, Ordering::SeqCst);
    log.append(b"inside the policy's loss window".to_vec()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.health().is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the timed fsync failed and poisoned the log");
    assert!(matches!(log.append(b"x".to_vec()).await.unwrap_err(), LogError::Poisoned { .. }));
}

#[tokio::test]
async fn a_failed_directory_fsync_fails_that_roll_and_the_next_append_rolls_again() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Faulty::default());
    let log = Log::open_with(dir.path(), &config(4096), Arc::new(LogMetrics::default()), storage.clone()).unwrap();
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for i in 0..40u32 {
        if i == 20 {
            storage.fail_dir_sync.store(true, Ordering::SeqCst);
        }
        let payload = vec![i as u8; 500];
        match log.append(payload.clone()).await {
            Ok(_) => acknowledged.push(payload),
            Err(e) => {
                assert!(matches!(e, LogError::Io { .. }) && e.is_retryable(), "{e}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 1, "only the append that met the failed roll");
    log.health().unwrap();
    assert!(segment::list(&dir.path().join("log")).unwrap().len() >= 4);
    assert_eq!(payloads(&read_all(&log, 0).await), acknowledged);
}

#[tokio::test]
async fn a_record_larger_than_the_limit_is_refused_at_append() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { max_record_bytes: ByteSize::kib(1), ..LogConfig::default() };
    let log = Log::open(dir.path(), &cfg, Arc::new(LogMetrics::default())).unwrap();
    log.append(vec![1; 1024]).await.unwrap();
    let e = log.append(vec![1; 1025]).await.unwrap_err();
    assert_eq!(e.http_status(), 413);
    assert_eq!(e.to_string(), "a record of 1025 bytes exceeds log.max_record_bytes (1024 bytes)");
    assert_eq!(read_all(&log, 0).await.len(), 1);

    let too_big = LogConfig { max_record_bytes: ByteSize::b(MAX_RECORD_BYTES + 1), ..LogConfig::default() };
    let e = Log::open(dir.path(), &too_big, Arc::new(LogMetrics::default())).unwrap_err();
    assert!(e.to_string().contains("log.max_record_bytes must be between"), "{e}");
}

/// A log of five four-byte records in one segment, closed; and that segment's path.
async fn five_records() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), &LogConfig::default(), Arc::new(LogMetrics::default())).unwrap();
    for p in [b"aaaa", b"bbbb", b"cccc", b"dddd", b"eeee"] {
        log.append(p.to_vec()).await.unwrap();
    }
    drop(log);
    let seg = segment::path(&dir.path().join("log"), 0);
    (dir, seg)
}

#[tokio::test]
async fn a_flipped_payload_byte_in_the_last_segment_loses_that_record_only() {
    let (dir, seg) = five_records().await;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(segment::HEADER_BYTES * 3 + 2 * 4) as usize] ^= 0xff; // record 3's payload
    fs::write(&seg, bytes).unwrap();
    let metrics = Arc::new(LogMetrics::default());
    let log = Log::open(dir.path(), &LogConfig::default(), Arc::clone(&metrics)).unwrap();
    assert_eq!(
        payloads(&read_all(&log, 0).await),
        [b"aaaa".to_vec(), b"bbbb".to_vec(), b"dddd".to_vec(), b"eeee".to_vec()]
    );
    assert_eq!(metrics.corrupt_regions(), 1);
    assert_eq!(metrics.cursor_skipped_bytes(None), segment::HEADER_BYTES + 4);
    let a = log.append(b"ffff".to_vec()).await.unwrap();
    assert_eq!(a.position, 5 * (segment::HEADER_BYTES + 4), "nothing was cut: new records follow the old");
}

#[tokio::test]
async fn a_flipped_length_in_the_last_segment_is_resynchronised_not_cut() {
    let (dir, seg) = five_records().await;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(segment::HEADER_BYTES + 4) as usize * 2 + 1] ^= 0x40; // record 3's length: 16 KiB longer
    fs::write(&seg, bytes).unwrap();
    let log = Log::open(dir.path(), &LogConfig::default(), Arc::new(LogMetrics::default())).unwrap();
    assert_eq!(
        payloads(&read_all(&log, 0).await),
        [b"aaaa".to_vec(), b"bbbb".to_vec(), b"dddd".to_vec(), b"eeee".to_vec()]
    );
}

#[tokio::test]
async fn corruption_in_a_closed_segment_is_skipped_by_every_cursor_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(4096);
    cfg.cursors.alert.enabled = true;
    let metrics = Arc::new(LogMetrics::default());
    let log = Log::open(dir.path(), &cfg, Arc::clone(&metrics)).unwrap();
    let mut written = Vec::new();
    for i in 0..60u32 {
        let payload = format!("record {i:03}").repeat(20).into_bytes();
        let a = log.append(payload.clone()).await.unwrap();
        written.push((a, payload));
    }
    // Flip a byte in the payload of record 3 of the first (closed) segment, and cut the second
    // segment's last record short, as a lost write of a closed file would.
    let log_dir = dir.path().join("log");
    let bases = segment::list(&log_dir).unwrap();
    assert!(bases.len() >= 3);
    let first = segment::path(&log_dir, bases[0]);
    let mut bytes = fs::read(&first).unwrap();
    bytes[(written[2].0.position + segment::HEADER_BYTES + 5) as usize] ^= 0x01;
    fs::write(&first, bytes).unwrap();
    let second = segment::path(&log_dir, bases[1]);
    let len = fs::metadata(&second).unwrap().len();
    OpenOptions::new().write(true).open(&second).unwrap().set_len(len - 10).unwrap();
    let cut = written.iter().position(|(a, _)| a.next == bases[2]).unwrap();

    let expected: Vec<_> =
        written.iter().enumerate().filter(|(i, _)| *i != 2 && *i != cut).map(|(_, (_, p))| p.clone()).collect();
    for cursor in [CursorName::Store, CursorName::Alert] {
        let mut reader = log.reader(cursor);
        let mut got = Vec::new();
        loop {
            let batch = reader.next(1 << 20, Duration::from_millis(20)).await.unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        assert_eq!(payloads(&got), expected, "{cursor}: every record but the two the faults hit");
        assert!(metrics.cursor_skipped_bytes(Some(cursor)) > 0);
    }
    assert_eq!(metrics.corrupt_regions(), 4, "two stretches, met by two cursors");
}

#[tokio::test]
async fn a_torn_group_write_is_still_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), &LogConfig::default(), Arc::new(LogMetrics::default())).unwrap();
        log.append(b"kept".to_vec()).await.unwrap();
    }
    let seg = segment::path(&dir.path().join("log"), 0);
    let mut torn = Vec::new();
    segment::encode(&mut torn, 1, b"cut by the crash");
    torn.truncate(torn.len() - 3);
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&torn).unwrap();
    let log = Log::open(dir.path(), &LogConfig::default(), Arc::new(LogMetrics::default())).unwrap();
    assert_eq!(log.end(), segment::HEADER_BYTES + 4);
    assert_eq!(fs::metadata(&seg).unwrap().len(), segment::HEADER_BYTES + 4);
}

/// A real full disk: a 512 KiB tmpfs, mounted for the test (root only, as the test command runs).
#[tokio::test]
async fn a_full_disk_is_reported_as_such_and_loses_nothing_acknowledged() {
    let Some(mount) = SmallTmpfs::mount("512k") else { return };
    let cfg = LogConfig { segment_bytes: ByteSize::kib(64), ..LogConfig::default() };
    let log = Log::open(&mount.dir, &cfg, Arc::new(LogMetrics::default())).unwrap();
    let mut acknowledged = Vec::new();
    let full = loop {
        let payload = vec![acknowledged.len() as u8; 10_000];
        match log.append(payload.clone()).await {
            Ok(_) => acknowledged.push(payload),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 1000, "a 512 KiB disk never filled");
    };
    assert!(matches!(full, LogError::NoSpace { .. }), "{full}");
    assert_eq!(full.http_status(), 507);
    assert!(full.to_string().starts_with("no space left on the log's disk"), "{full}");
    log.health().expect("a full disk does not poison the log");
    assert_eq!(payloads(&read_all(&log, 0).await), acknowledged);
    // Room again (a cursor passed the old segments): appends go on where they stopped.
    log.commit(CursorName::Store, log.end()).unwrap();
    log.append(b"after".to_vec()).await.unwrap();
    drop(log);
    let log = Log::open(&mount.dir, &cfg, Arc::new(LogMetrics::default())).unwrap();
    let after: Vec<_> = read_all(&log, log.start()).await;
    assert_eq!(after.last().unwrap().payload, b"after");
}

struct SmallTmpfs {
    dir: PathBuf,
}

impl SmallTmpfs {
    /// Mounts a tmpfs of `size`; `None` (said on stderr) where the test cannot mount: not root.
    fn mount(size: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("yaffle-log-enospc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir }),
            // The test command runs as root; anywhere else a mount is no test's to make.
            _ if !is_root() => {
                eprintln!("skipped: mounting a tmpfs needs root");
                None
            }
            other => panic!("mount -t tmpfs failed as root: {other:?}"),
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
