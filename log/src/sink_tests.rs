//! The sink runtime on a real log, with a scripted delivery, in tokio's paused time: retries and
//! restarts are waited for without sleeping.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use yaffle_core::Batch;

use super::sink::*;
use super::*;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Deliver,
    Retry,
    Fatal,
    Panic,
    Rewind(u64),
}

#[derive(Debug, Default)]
struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    /// Record positions delivered, in order, over every attempt.
    delivered: Mutex<Vec<u64>>,
    /// `end` of every successful flush.
    flush_ends: Mutex<Vec<u64>>,
    starts: AtomicUsize,
    cut: Mutex<Option<u64>>,
}

struct Fake {
    log: Arc<Log>,
    script: Arc<Script>,
    held: Vec<u64>,
    batch: usize,
}

impl Delivery for Fake {
    async fn start(&mut self) -> Result<u64, SinkError> {
        self.script.starts.fetch_add(1, Ordering::SeqCst);
        Ok(self.log.cursor_position(CursorName::Store))
    }

    fn add(&mut self, record: &Record) -> Result<(), yaffle_core::batch::DecodeError> {
        Batch::decode(&record.payload)?;
        self.held.push(record.position);
        Ok(())
    }

    fn flush_now(&self, due: bool) -> bool {
        due || self.held.len() >= self.batch
    }

    fn cut_at(&self) -> Option<u64> {
        *self.script.cut.lock().unwrap()
    }

    async fn flush(&mut self, end: u64) -> Result<Flushed, SinkError> {
        // The script is for deliveries of records: a flush holding none (the driver commits at a
        // due time or at shutdown) always succeeds, so the scripted outcomes meet the records they
        // are written for whatever the timing.
        let outcome = if self.held.is_empty() {
            Outcome::Deliver
        } else {
            self.script.outcomes.lock().unwrap().pop_front().unwrap_or(Outcome::Deliver)
        };
        match outcome {
            Outcome::Deliver => {
                self.script.delivered.lock().unwrap().append(&mut self.held);
                self.script.flush_ends.lock().unwrap().push(end);
                self.script.cut.lock().unwrap().take_if(|c| *c <= end);
                self.log.commit(CursorName::Store, end)?;
                Ok(Flushed::Done)
            }
            Outcome::Retry => Err(SinkError::retryable("destination down")),
            Outcome::Fatal => Err(SinkError::fatal("destination refused the configuration")),
            Outcome::Panic => panic!("a bug in the sink"),
            Outcome::Rewind(p) => {
                self.held.clear();
                Ok(Flushed::Rewind(p))
            }
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    script: Arc<Script>,
    supervisor: Arc<Supervisor>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    positions: Vec<u64>,
}

const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A log holding `payloads`, and the fake sink `test` running on it with `outcomes` scripted.
async fn harness(payloads: &[Vec<u8>], outcomes: &[Outcome], batch: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Arc::new(LogMetrics::default())).unwrap());
    let mut positions = Vec::new();
    for p in payloads {
        positions.push(log.append(p.clone()).await.unwrap().position);
    }
    let script = Arc::new(Script { outcomes: Mutex::new(outcomes.iter().copied().collect()), ..Script::default() });
    let supervisor = Supervisor::new(&mut prometheus_client::registry::Registry::default());
    let (stop, stopped) = watch::channel(false);
    let config = DriverConfig {
        read_bytes: 1 << 20,
        flush_interval: Duration::from_millis(500),
        retry_initial: RETRY_INITIAL,
        retry_max: RETRY_MAX,
    };
    let (l, s) = (Arc::clone(&log), Arc::clone(&script));
    let make = move || Fake { log: Arc::clone(&l), script: Arc::clone(&s), held: Vec::new(), batch };
    let task = supervisor.spawn("test", Arc::clone(&log), CursorName::Store, config, make, stopped);
    Harness { _dir: dir, log, script, supervisor, stop, task: Some(task), positions }
}

impl Harness {
    /// Waits until `f` holds, checking every 5 ms of paused time; panics after ten seconds of real
    /// time. (A virtual deadline would race the log's real writer thread: while the runtime waits for
    /// it, paused time jumps ahead.)
    async fn until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}: {:?}, delivered {:?}, log end {}",
                self.supervisor.statuses(),
                self.delivered(),
                self.log.end()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn delivered(&self) -> Vec<u64> {
        self.script.delivered.lock().unwrap().clone()
    }

    fn status(&self) -> SinkStatus {
        self.supervisor.statuses()["test"].clone()
    }

    async fn stop(mut self) -> Self {
        self.stop.send(true).unwrap();
        self.task.take().unwrap().await.unwrap();
        self
    }
}

fn good() -> Vec<u8> {
    Batch::new(Vec::new()).encode()
}

#[tokio::test(start_paused = true)]
async fn undecodable_records_are_skipped_counted_and_the_rest_delivered() {
    let h = harness(&[good(), b"not a batch".to_vec(), good(), good()], &[], 3).await;
    let p = &h.positions;
    h.until("three records are delivered", |h| h.delivered().len() == 3).await;
    assert_eq!(h.delivered(), vec![p[0], p[2], p[3]]);
    let metrics = &h.supervisor.metrics_for_tests();
    assert_eq!(metrics.skipped, 1, "the undecodable record is counted for its sink");
    h.until("the cursor is committed past all four", |h| h.log.cursor_position(CursorName::Store) == h.log.end()).await;
    assert_eq!(h.status().state, SinkState::Running);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_the_same_content_after_jittered_doubling_delays() {
    let started = Instant::now();
    let h = harness(&[good(), good()], &[Outcome::Retry, Outcome::Retry, Outcome::Retry], 2).await;
    h.until("the sink is retrying", |h| h.status().state == SinkState::Retrying).await;
    assert_eq!(h.status().error.as_deref(), Some("destination down"));
    assert!(h.delivered().is_empty());
    h.until("both records are delivered", |h| h.delivered().len() == 2).await;
    let waited = started.elapsed();
    // Three delays, each in the upper half of its step: 100 ms, 200 ms, 400 ms.
    assert!(waited >= Duration::from_millis(350) && waited <= Duration::from_millis(750), "waited {waited:?}");
    assert_eq!(h.status(), SinkStatus { state: SinkState::Running, error: None, restarts: 0 });
    assert_eq!(h.supervisor.metrics_for_tests().retries, 3);
    assert_eq!(h.script.starts.load(Ordering::SeqCst), 1, "a retryable error does not restart the sink");
    h.stop().await;
}

/// In real time: the appends wait for the log's writer thread, and paused time would jump past the
/// whole failure and restart meanwhile, leaving no `failed` state to see.
#[tokio::test]
async fn a_fatal_error_is_surfaced_and_the_sink_restarts_from_its_commit() {
    let mut h = harness(&[good()], &[Outcome::Deliver, Outcome::Fatal], 1).await;
    h.until("the first record is delivered", |h| h.delivered().len() == 1).await;
    for _ in 0..2 {
        h.positions.push(h.log.append(good()).await.unwrap().position);
    }
    h.until("the sink has failed", |h| h.status().state == SinkState::Failed).await;
    assert_eq!(h.supervisor.failures(), vec!["test: destination refused the configuration".to_string()]);
    assert_eq!(h.supervisor.metrics_for_tests().up, 0);
    h.until("the sink recovered", |h| h.status().state == SinkState::Running).await;
    h.until("everything is delivered", |h| h.delivered().len() == 3).await;
    assert_eq!(h.delivered(), h.positions, "the restart read on from the commit, losing nothing");
    assert_eq!(h.status().restarts, 1);
    assert_eq!(h.script.starts.load(Ordering::SeqCst), 2);
    let m = h.supervisor.metrics_for_tests();
    assert_eq!((m.fatal, m.restarts, m.up), (1, 1, 1));
    assert!(h.supervisor.failures().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sink_is_restarted() {
    let h = harness(&[good(), good()], &[Outcome::Panic], 2).await;
    h.until("the sink has failed", |h| h.status().state == SinkState::Failed).await;
    assert!(h.status().error.unwrap().contains("a bug in the sink"));
    h.until("everything is delivered", |h| h.delivered().len() == 2).await;
    assert_eq!(h.status().restarts, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cut_makes_the_flush_end_exactly_there() {
    let payloads: Vec<_> = (0..5).map(|_| good()).collect();
    // The sink task runs only once this test awaits: the cut is set before it reads.
    let h = harness(&payloads, &[], usize::MAX).await;
    *h.script.cut.lock().unwrap() = Some(h.positions[3]);
    h.until("everything is delivered", |h| h.delivered().len() == 5).await;
    assert_eq!(h.script.flush_ends.lock().unwrap().clone(), vec![h.positions[3], h.log.end()]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rewind_reads_the_records_again() {
    let h = harness(&[good(), good()], &[Outcome::Rewind(0)], 2).await;
    h.until("both records are delivered", |h| h.delivered().len() == 2).await;
    assert_eq!(h.script.flush_ends.lock().unwrap().len(), 1, "the rewound flush delivered nothing");
    assert_eq!(h.delivered(), h.positions);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_what_is_held_and_stops() {
    let h = harness(&[good()], &[], usize::MAX).await;
    h.until("the record is read", |h| h.supervisor.metrics_for_tests().read_position == h.log.end()).await;
    assert!(h.delivered().is_empty(), "held until the flush interval");
    let h = h.stop().await;
    assert_eq!(h.delivered(), h.positions);
    assert_eq!(h.status().state, SinkState::Stopped);
}
