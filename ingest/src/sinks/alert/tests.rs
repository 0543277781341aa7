//! The alert sink against recording destinations (a mock beside the real end-to-end test in
//! `tests/e2e/alerting.rs`): routing, independent replicas, replay after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};

use super::*;
use crate::metrics::Metrics;
use yaffle_log::{CursorName, Log, LogConfig};

/// Records what it receives; can be down, and can restart (new instance, empty state).
#[derive(Debug)]
struct Recorder {
    name: String,
    instance: Mutex<String>,
    received: Mutex<Vec<(String, i64)>>,
    down: AtomicBool,
}

impl Recorder {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            instance: Mutex::new("one".into()),
            received: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
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

    async fn push(&self, batch: &Batch, expected: Option<&str>) -> Result<(Ack, bool), String> {
        if self.down.load(Ordering::SeqCst) {
            return Err("down".into());
        }
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
    let dir = tempfile::tempdir().unwrap();
    let mut log_config = LogConfig::default();
    log_config.cursors.alert.enabled = true;
    let metrics = Arc::new(Metrics::default());
    let log = Arc::new(Log::open(dir.path(), &log_config, Arc::clone(&metrics.log)).unwrap());
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
