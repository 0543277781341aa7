//! The alert sink against recording destinations (a mock beside the real end-to-end test in
//! `tests/e2e/alerting.rs`): routing, independent replicas, replay after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};

use super::*;
use crate::metrics::Metrics;
use yaffle_log::sink::SinkError;
use yaffle_log::{CursorName, Log, LogConfig};

/// Records what it receives; can be down, and can restart (new instance, empty state).
#[derive(Debug)]
struct Recorder {
    name: String,
    instance: Mutex<String>,
    received: Mutex<Vec<(String, i64)>>,
    /// Sizes of the bodies pushed.
    bodies: Mutex<Vec<usize>>,
    down: AtomicBool,
    /// Answers like an evaluator whose body limit is this (a 413, fatal).
    body_limit: Mutex<usize>,
}

impl Recorder {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            instance: Mutex::new("one".into()),
            received: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            body_limit: Mutex::new(usize::MAX),
        })
    }

    fn ack(&self) -> Ack {
        Ack { instance: self.instance.lock().unwrap().clone(), horizon_seconds: 3600.0 }
    }

    fn restart(&self) {
        *self.instance.lock().unwrap() = "two".into();
        self.received.lock().unwrap().clear();
    }

    fn received(&self) -> Vec<(String, i64)> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Destination for Recorder {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn status(&self) -> Result<Ack, String> {
        if self.down.load(Ordering::SeqCst) { Err("down".into()) } else { Ok(self.ack()) }
    }

    async fn push(&self, batch: &Batch, encoded: &[u8], expected: Option<&str>) -> Result<(Ack, bool), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::retryable("down"));
        }
        if encoded.len() > *self.body_limit.lock().unwrap() {
            return Err(SinkError::fatal("413 Payload Too Large"));
        }
        self.bodies.lock().unwrap().push(encoded.len());
        if expected.is_some_and(|e| e != *self.instance.lock().unwrap()) {
            return Ok((self.ack(), false));
        }
        let mut r = self.received.lock().unwrap();
        r.extend(batch.points.iter().map(|p| (p.series.measurement().to_string(), p.timestamp)));
        Ok((self.ack(), true))
    }
}

fn batch(measurements: &[&str], t: i64) -> Vec<u8> {
    Batch::new(
        measurements
            .iter()
            .map(|m| {
                let key = Arc::new(SeriesKey::new("db", *m, vec![("host".into(), format!("h{t}"))]));
                Point::new(key, vec![("v".into(), FieldValue::Float(1.0))], t)
            })
            .collect(),
    )
    .encode()
}

/// A log with the alert cursor on, in a directory of its own.
fn open_log() -> (tempfile::TempDir, Arc<Log>, Arc<Metrics>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log_config = LogConfig::default();
    log_config.cursors.alert.enabled = true;
    let metrics = Arc::new(Metrics::default());
    let log = Arc::new(Log::open(dir.path(), &log_config, Arc::clone(&metrics.log)).unwrap());
    (dir, log, metrics)
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn routes_by_measurement_replicas_progress_alone_and_restarts_replay() {
    let (dir, log, metrics) = open_log();
    let measurements = ["cpu", "mem", "disk", "net", "swap", "load"];
    for t in 0..10 {
        log.append(batch(&measurements, t)).await.unwrap();
        if t == 4 {
            // One undecodable record: skipped and counted, the sink goes on.
            log.append(b"not a batch".to_vec()).await.unwrap();
        }
    }
    let (a1, a2, b1) = (Recorder::new("a1"), Recorder::new("a2"), Recorder::new("b1"));
    a2.down.store(true, Ordering::SeqCst);
    let config = AlertSinkConfig {
        evaluators: Vec::new(),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(20),
        ..AlertSinkConfig::default()
    };
    let destinations: Vec<Vec<Arc<dyn Destination>>> =
        vec![vec![a1.clone(), a2.clone()], vec![b1.clone() as Arc<dyn Destination>]];
    let (stop, stopped) = watch::channel(false);
    let sink = AlertSink::new(Arc::clone(&log), config, metrics, dir.path().join("alert"), destinations);
    let mut registry = prometheus_client::registry::Registry::default();
    let tasks = sink.spawn(&yaffle_log::sink::Supervisor::new(&mut registry), stopped).unwrap();

    // Evaluator A's replica 1 gets its points although replica 2 is down; B gets the rest.
    wait_until("both evaluators have every point", || a1.received().len() + b1.received().len() == 60).await;
    let of = |r: &Recorder| {
        let mut m: Vec<String> = r.received().into_iter().map(|(m, _)| m).collect();
        m.sort();
        m.dedup();
        m
    };
    let (on_a, on_b) = (of(&a1), of(&b1));
    assert!(!on_a.is_empty() && !on_b.is_empty(), "both evaluators get measurements: {on_a:?} {on_b:?}");
    assert!(on_a.iter().all(|m| !on_b.contains(m)), "a measurement goes to one evaluator: {on_a:?} {on_b:?}");
    assert!(a2.received().is_empty());

    // The down replica catches up on its own.
    a2.down.store(false, Ordering::SeqCst);
    wait_until("the second replica caught up", || a2.received().len() == a1.received().len()).await;

    // A restarted evaluator gets its horizon (here everything) again before new points.
    b1.restart();
    log.append(batch(&measurements, 10)).await.unwrap();
    wait_until("the restarted evaluator got history and the new points", || {
        b1.received().iter().filter(|(_, t)| *t == 10).count() == on_b.len()
    })
    .await;
    let times: Vec<i64> = b1.received().iter().map(|(_, t)| *t).collect();
    assert_eq!(times.first(), Some(&0), "replay starts with the oldest point: {times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "history before live points: {times:?}");

    stop.send(true).unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
    assert_eq!(log.cursor_position(CursorName::Alert), 0, "a one-hour horizon keeps everything replayable");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for replica in ["a1", "a2", "b1"] {
        assert!(text.contains(&format!("yaffle_sink_skipped_records_total{{sink=\"alert {replica}\"}} ")), "{text}");
    }
}

/// One write larger than the evaluator takes in one body reaches it whole, in parts under
/// `max_push_bytes`; an evaluator refusing a push for good (a 4xx) is a reported failure, not an
/// endless retry, and the sink recovers once it accepts again.
#[tokio::test]
async fn large_writes_are_pushed_in_parts_and_a_refused_push_is_a_reported_failure() {
    let (dir, log, metrics) = open_log();
    let many: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    let record = batch(&names, 1);
    log.append(record.clone()).await.unwrap();
    let a = Recorder::new("a");
    let config = AlertSinkConfig {
        max_push_bytes: bytesize::ByteSize::b(record.len() as u64 / 4),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(20),
        ..AlertSinkConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    let sink = AlertSink::new(Arc::clone(&log), config, metrics, dir.path().join("alert"), vec![vec![a.clone()]]);
    let mut registry = prometheus_client::registry::Registry::default();
    let supervisor = yaffle_log::sink::Supervisor::new(&mut registry);
    let tasks = sink.spawn(&supervisor, stopped).unwrap();
    wait_until("every point arrived", || a.received().len() == 500).await;
    let bodies = a.bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 4 && bodies.iter().all(|&b| b <= record.len() / 4), "{bodies:?}");

    *a.body_limit.lock().unwrap() = 10;
    log.append(batch(&["late"], 2)).await.unwrap();
    wait_until("the refusal is reported", || !supervisor.failures().is_empty()).await;
    let failures = supervisor.failures();
    assert!(failures[0].starts_with("alert a: 413"), "{failures:?}");
    *a.body_limit.lock().unwrap() = usize::MAX;
    wait_until("the sink recovered", || a.received().iter().any(|(m, _)| m == "late")).await;
    wait_until("healthy again", || supervisor.failures().is_empty()).await;
    stop.send(true).unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
