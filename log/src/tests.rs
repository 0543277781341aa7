use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;

use yaffle_core::ErrorStatus;

use super::*;

pub(crate) fn config(segment: u64) -> LogConfig {
    LogConfig { segment_bytes: ByteSize::b(segment), ..LogConfig::default() }
}

fn open(dir: &Path, config: &LogConfig) -> Log {
    Log::open(dir, config, Arc::new(LogMetrics::default())).unwrap()
}

pub(crate) async fn read_all(log: &Log, from: u64) -> Vec<Record> {
    let mut reader = log.reader_at(from);
    let mut out = Vec::new();
    loop {
        let batch = reader.next(1 << 20, Duration::from_millis(20)).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

#[tokio::test]
async fn appended_records_are_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(4096));
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let payload = format!("record {i}").repeat(10).into_bytes();
        let a = log.append(payload.clone()).await.unwrap();
        expected.push((a.position, payload));
    }
    assert!(segment::list(&dir.path().join("log")).unwrap().len() > 3, "rolled into several segments");
    let records = read_all(&log, 0).await;
    assert_eq!(records.len(), 200);
    for (r, (pos, payload)) in records.iter().zip(&expected) {
        assert_eq!((r.position, &r.payload), (*pos, payload));
    }
    assert!(records.windows(2).all(|w| w[0].next == w[1].position && w[0].ingest_time <= w[1].ingest_time));
}

#[tokio::test]
async fn concurrent_appends_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(LogMetrics::default());
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Arc::clone(&metrics)).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(vec![i as u8; 100]).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(metrics.appends(), 200);
    assert!(metrics.fsyncs() <= 200);
    assert_eq!(read_all(&log, 0).await.len(), 200);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_on_open_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), &LogConfig::default());
        log.append(b"one".to_vec()).await.unwrap();
        log.append(b"two".to_vec()).await.unwrap();
    }
    let seg = segment::path(&dir.path().join("log"), 0);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap(); // a header cut short by a crash
    drop(f);
    let log = open(dir.path(), &LogConfig::default());
    let a = log.append(b"three".to_vec()).await.unwrap();
    let payloads: Vec<Vec<u8>> = read_all(&log, 0).await.into_iter().map(|r| r.payload).collect();
    assert_eq!(payloads, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    assert_eq!(a.position, 2 * segment::HEADER_BYTES + 6);
}

#[tokio::test]
async fn cursors_persist_and_segments_go_only_when_every_enabled_cursor_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(4096);
    cfg.cursors.alert.enabled = true;
    let log_dir = dir.path().join("log");
    let mut last = 0;
    {
        let log = open(dir.path(), &cfg);
        for _ in 0..100 {
            last = log.append(vec![7; 200]).await.unwrap().next;
        }
        let segments = segment::list(&log_dir).unwrap().len();
        log.commit(CursorName::Store, last).unwrap();
        assert_eq!(segment::list(&log_dir).unwrap().len(), segments, "alert cursor still at 0 keeps everything");
        log.commit(CursorName::Alert, last).unwrap();
        assert_eq!(segment::list(&log_dir).unwrap().len(), 1, "only the active segment is left");
    }
    let log = open(dir.path(), &cfg);
    assert_eq!(log.cursor_position(CursorName::Store), last);
    log.commit(CursorName::Store, 0).unwrap();
    drop(log);
    let log = open(dir.path(), &cfg);
    assert_eq!(log.cursor_position(CursorName::Store), last, "a cursor never moves back");
    assert_eq!(log.reader(CursorName::Alert).position(), last);
    assert!(log.start() > 0);
}

#[tokio::test]
async fn a_blocking_cursor_over_budget_refuses_appends_until_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(4096);
    cfg.cursors.store.disk_budget = ByteSize::b(8192);
    let log = open(dir.path(), &cfg);
    let mut refused = None;
    for i in 0..100 {
        match log.append(vec![1; 500]).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("budget enforced");
    assert!(matches!(e, LogError::Backpressure { cursor: CursorName::Store, .. }), "{e}");
    assert_eq!(e.http_status(), 503);
    assert!((15..=17).contains(&i), "refused after about 8 KiB, at append {i}");
    log.commit(CursorName::Store, log.end()).unwrap();
    log.append(vec![1; 500]).await.unwrap();
}

#[tokio::test]
async fn a_drop_oldest_cursor_loses_only_its_own_oldest_data() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(LogMetrics::default());
    let mut cfg = config(4096);
    cfg.cursors.store.disk_budget = ByteSize::mib(64);
    cfg.cursors.alert =
        CursorConfig { enabled: true, disk_budget: ByteSize::b(8192), policy: OverflowPolicy::DropOldest };
    let log = Log::open(dir.path(), &cfg, Arc::clone(&metrics)).unwrap();
    for _ in 0..100 {
        log.append(vec![1; 500]).await.unwrap();
    }
    let dropped = metrics.cursor_dropped_bytes(CursorName::Alert);
    assert!(dropped > 0);
    // The alert reader starts past what was dropped, the store reader still sees everything.
    let mut alert = log.reader(CursorName::Alert);
    let first = alert.next(1 << 20, Duration::from_millis(10)).await.unwrap();
    assert!(first[0].position >= dropped);
    assert!(log.end() - first[0].position <= 8192 + 4096);
    assert_eq!(read_all(&log, 0).await.len(), 100);
}

#[tokio::test]
async fn seek_by_ingest_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(4096));
    let mut marks = Vec::new();
    for i in 0..60 {
        let before = now_ns();
        let a = log.append(vec![i; 300]).await.unwrap();
        if i % 10 == 0 {
            marks.push((before, a.position));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for (time, position) in marks {
        assert_eq!(log.position_at_time(time).unwrap(), position);
    }
    assert_eq!(log.position_at_time(0).unwrap(), 0);
    assert_eq!(log.position_at_time(i64::MAX).unwrap(), log.end());
}

#[tokio::test]
async fn readers_wait_for_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), &LogConfig::default()));
    let mut reader = log.reader(CursorName::Store);
    assert!(reader.next(1024, Duration::from_millis(10)).await.unwrap().is_empty());
    let writer = Arc::clone(&log);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.append(b"late".to_vec()).await.unwrap();
    });
    let got = reader.next(1024, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[0].payload, b"late");
}

#[test]
fn fsync_policy_parses() {
    #[derive(serde::Deserialize)]
    struct W {
        f: FsyncPolicy,
    }
    let parse = |s: &str| serde_json::from_str::<W>(&format!("{{\"f\":\"{s}\"}}")).map(|w| w.f);
    assert_eq!(parse("always").unwrap(), FsyncPolicy::Always);
    assert_eq!(parse("100ms").unwrap(), FsyncPolicy::Interval(Duration::from_millis(100)));
    assert!(parse("sometimes").unwrap_err().to_string().contains("fsync must be"));
}

#[test]
fn concurrent_commits_of_one_cursor_all_succeed_and_keep_the_largest() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), &LogConfig::default()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    log.commit(CursorName::Store, i * 4 + t).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.cursor_position(CursorName::Store), 199 * 4 + 3);
    let on_disk = std::fs::read_to_string(dir.path().join("log/store.cursor")).unwrap();
    assert_eq!(on_disk, (199 * 4 + 3).to_string());
}

#[tokio::test]
async fn a_second_process_cannot_open_a_log_in_use_and_the_lock_goes_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(4096));
    log.append(b"one".to_vec()).await.unwrap();
    let e = Log::open(dir.path(), &config(4096), Arc::new(LogMetrics::default())).unwrap_err();
    assert!(matches!(e, LogError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(log);
    let log = open(dir.path(), &config(4096));
    assert_eq!(read_all(&log, 0).await.len(), 1);
}

#[tokio::test]
async fn a_log_of_another_data_format_is_refused_unless_upgraded_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), &config(4096)));
    let marker = dir.path().join("log").join("FORMAT");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), format!("{}\n", dir::FORMAT));

    // A log written before the marker existed (format 1): refused, naming the option.
    std::fs::remove_file(&marker).unwrap();
    let e = Log::open(dir.path(), &config(4096), Arc::new(LogMetrics::default())).unwrap_err();
    assert!(matches!(e, LogError::Format { .. }), "{e}");
    assert!(e.to_string().contains("log.upgrade_from_format_1"), "{e}");
    let upgrade = LogConfig { upgrade_from_format_1: true, ..config(4096) };
    drop(open(dir.path(), &upgrade));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), format!("{}\n", dir::FORMAT));

    // A newer format is never read.
    std::fs::write(&marker, "3\n").unwrap();
    let e = Log::open(dir.path(), &upgrade, Arc::new(LogMetrics::default())).unwrap_err();
    assert!(e.to_string().contains("data format 3"), "{e}");
}
