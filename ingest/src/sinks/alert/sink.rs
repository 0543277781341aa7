//! The alert sink: one delivery per evaluator replica on the sink runtime ([`yaffle_log::sink`]), each
//! reading the log at its own position.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use yaffle_core::batch::DecodeError;
use yaffle_core::strategy::Distribution;
use yaffle_core::{Batch, Point};
use yaffle_log::sink::{Delivery, DriverConfig, Flushed, SinkError, Supervisor};
use yaffle_log::{CursorName, Log, Record};

use super::config::AlertSinkConfig;
use super::destination::{Ack, Destination};
use crate::error::IngestError;
use crate::metrics::{Metrics, ReplicaLabels};
use crate::sinks::save_json;

/// How often a replica's progress is persisted and the log cursor moved.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Finest spacing, in ingest time, of the positions kept to replay from.
const CHECKPOINT_SPACING_NS: i64 = 100_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// Everything before this position was delivered to `instance`.
    delivered: u64,
    /// Replaying from here rebuilds the evaluator's state.
    rebuild_from: u64,
    /// The evaluator instance the points went to.
    instance: Option<String>,
}

/// The alert sink.
#[derive(Debug)]
pub struct AlertSink {
    log: Arc<Log>,
    config: AlertSinkConfig,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    /// `destinations[i]` are the replicas of evaluator `i`.
    destinations: Vec<Vec<Arc<dyn Destination>>>,
}

impl AlertSink {
    /// A sink delivering to `destinations` (replicas by evaluator), keeping progress files in `dir`.
    pub fn new(
        log: Arc<Log>,
        config: AlertSinkConfig,
        metrics: Arc<Metrics>,
        dir: PathBuf,
        destinations: Vec<Vec<Arc<dyn Destination>>>,
    ) -> Self {
        Self { log, config, metrics, dir, destinations }
    }

    /// Runs one sink per replica (`alert <replica URL>`) under `supervisor` until `stop` turns true.
    pub fn spawn(
        self,
        supervisor: &Arc<Supervisor>,
        stop: watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, IngestError> {
        std::fs::create_dir_all(&self.dir).map_err(IngestError::io(&self.dir))?;
        let distribution = Arc::new(Distribution::new(&self.config.distribution).map_err(IngestError::Config)?);
        let evaluators = self.destinations.len();
        let replicas: usize = self.destinations.iter().map(Vec::len).sum();
        let start = self.log.cursor_position(CursorName::Alert);
        let positions = Arc::new(Mutex::new(vec![start; replicas]));
        let c = &self.config;
        let driver = DriverConfig {
            read_bytes: c.read_bytes.as_u64() as usize,
            flush_interval: Duration::from_millis(200),
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
        };
        let mut tasks = Vec::new();
        let mut slot = 0;
        for (evaluator, dests) in self.destinations.iter().enumerate() {
            for (replica, dest) in dests.iter().enumerate() {
                let replica = Arc::new(Replica {
                    log: Arc::clone(&self.log),
                    dest: Arc::clone(dest),
                    distribution: Arc::clone(&distribution),
                    evaluator,
                    evaluators,
                    path: self.dir.join(format!("evaluator-{}-replica-{}.json", evaluator + 1, replica + 1)),
                    slot,
                    positions: Arc::clone(&positions),
                    metrics: Arc::clone(&self.metrics),
                    labels: ReplicaLabels { replica: dest.name() },
                    max_push_bytes: c.max_push_bytes.as_u64() as usize,
                });
                let name = format!("alert {}", dest.name());
                let make = move || ReplicaDelivery {
                    replica: Arc::clone(&replica),
                    progress: Progress { delivered: start, rebuild_from: start, instance: None },
                    horizon_ns: 0,
                    points: Vec::new(),
                    taken: Vec::new(),
                    checkpoints: VecDeque::new(),
                    persisted: Instant::now(),
                };
                tasks.push(supervisor.spawn(
                    name,
                    Arc::clone(&self.log),
                    CursorName::Alert,
                    driver,
                    make,
                    stop.clone(),
                ));
                slot += 1;
            }
        }
        Ok(tasks)
    }
}

fn load(path: &Path, start: u64) -> Result<Progress, IngestError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| IngestError::SinkState(format!("{}: not an alert sink progress file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Progress { delivered: start, rebuild_from: start, instance: None })
        }
        Err(e) => Err(IngestError::io(path)(e)),
    }
}

/// What a replica's deliveries share across restarts.
#[derive(Debug)]
struct Replica {
    log: Arc<Log>,
    dest: Arc<dyn Destination>,
    distribution: Arc<Distribution>,
    evaluator: usize,
    evaluators: usize,
    path: PathBuf,
    slot: usize,
    positions: Arc<Mutex<Vec<u64>>>,
    metrics: Arc<Metrics>,
    labels: ReplicaLabels,
    /// `sinks.alert.max_push_bytes`.
    max_push_bytes: usize,
}

/// One replica's delivery: the points routed to its evaluator, pushed to the instance that holds the
/// history before them; a restarted instance gets its horizon replayed first.
struct ReplicaDelivery {
    replica: Arc<Replica>,
    progress: Progress,
    horizon_ns: i64,
    /// Points held for the next push.
    points: Vec<Point>,
    /// (ingest time, position) of the records held.
    taken: Vec<(i64, u64)>,
    /// Positions to replay from, by ingest time, newest last.
    checkpoints: VecDeque<(i64, u64)>,
    persisted: Instant,
}

impl Delivery for ReplicaDelivery {
    async fn start(&mut self) -> Result<u64, SinkError> {
        let r = &self.replica;
        self.progress = load(&r.path, self.progress.delivered).map_err(SinkError::classify)?;
        // Learn who is there before delivering anything: a new instance needs the history.
        let ack = r.dest.status().await.map_err(|e| SinkError::retryable(format!("evaluator unreachable: {e}")))?;
        self.horizon_ns = ack.horizon_ns();
        self.adopt(&ack);
        Ok(self.progress.delivered)
    }

    fn add(&mut self, record: &Record) -> Result<(), DecodeError> {
        let r = &self.replica;
        let batch = Batch::decode(&record.payload)?;
        self.points.extend(batch.points.into_iter().filter(|p| {
            let route = r.distribution.route(&p.series, p.series_id);
            Distribution::target(route, r.evaluators) == r.evaluator
        }));
        self.taken.push((record.ingest_time, record.position));
        Ok(())
    }

    fn flush_now(&self, _due: bool) -> bool {
        true
    }

    async fn flush(&mut self, end: u64) -> Result<Flushed, SinkError> {
        let r = Arc::clone(&self.replica);
        if !self.points.is_empty() {
            // Pushed in parts that fit the evaluator's body limit; a part delivered is not pushed again
            // when a later one fails and is retried.
            let limit = r.max_push_bytes;
            let mut parts = Batch::encode_within(std::mem::take(&mut self.points), limit)
                .map_err(|e| SinkError::fatal(format!("{e} (sinks.alert.max_push_bytes)")))?
                .into_iter();
            while let Some((batch, encoded)) = parts.next() {
                let pushed = r.dest.push(&batch, &encoded, self.progress.instance.as_deref()).await;
                let (ack, accepted) = match pushed {
                    Ok(answer) => answer,
                    Err(e) => {
                        self.points = batch.points;
                        self.points.extend(parts.flat_map(|(b, _)| b.points));
                        r.metrics.alert_errors.get_or_create(&r.labels).inc();
                        return Err(e);
                    }
                };
                self.horizon_ns = ack.horizon_ns();
                // A refused push means another instance answered: adopting it replays its history.
                if self.adopt(&ack) || !accepted {
                    self.taken.clear();
                    self.checkpoints.clear();
                    return Ok(Flushed::Rewind(self.progress.delivered));
                }
                r.metrics.alert_points.get_or_create(&r.labels).inc_by(batch.points.len() as u64);
            }
        }
        let last_time = self.taken.last().map_or(0, |&(t, _)| t);
        for (t, position) in self.taken.drain(..) {
            if self.checkpoints.back().is_none_or(|&(last, _)| t - last >= CHECKPOINT_SPACING_NS) {
                self.checkpoints.push_back((t, position));
            }
        }
        self.progress.delivered = end;
        // The newest checkpoint at or before `last - horizon` is where a replay must start.
        let limit = last_time - self.horizon_ns;
        while self.checkpoints.len() >= 2 && self.checkpoints[1].0 <= limit {
            self.checkpoints.pop_front();
        }
        if let Some(&(t, pos)) = self.checkpoints.front()
            && t <= limit
        {
            self.progress.rebuild_from = self.progress.rebuild_from.max(pos);
        }
        r.metrics.alert_position.get_or_create(&r.labels).set(end as i64);
        if self.persisted.elapsed() >= PERSIST_EVERY {
            self.persist()?;
            self.persisted = Instant::now();
        }
        Ok(Flushed::Done)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.persist()
    }
}

impl ReplicaDelivery {
    /// Records the instance that answered; when it is not the one the points went to, moves back to
    /// the rebuild position and returns true.
    fn adopt(&mut self, ack: &Ack) -> bool {
        let r = &self.replica;
        let restarted = self.progress.instance.as_deref().is_some_and(|i| i != ack.instance);
        self.progress.instance = Some(ack.instance.clone());
        if restarted {
            tracing::info!(
                from = self.progress.rebuild_from,
                to = self.progress.delivered,
                "evaluator restarted, replaying its horizon"
            );
            r.metrics.alert_replays.get_or_create(&r.labels).inc();
            self.progress.delivered = self.progress.rebuild_from;
        }
        restarted
    }

    fn persist(&self) -> Result<(), SinkError> {
        let r = &self.replica;
        save_json(&r.path, &self.progress).map_err(SinkError::classify)?;
        let oldest = {
            let mut positions = r.positions.lock().expect("positions lock");
            positions[r.slot] = self.progress.rebuild_from;
            positions.iter().copied().min().expect("at least one replica")
        };
        Ok(r.log.commit(CursorName::Alert, oldest)?)
    }
}
