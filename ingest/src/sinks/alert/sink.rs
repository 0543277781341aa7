//! One task per evaluator replica, each reading the log at its own position.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use yaffle_core::Batch;
use yaffle_core::strategy::Distribution;

use super::config::AlertSinkConfig;
use super::destination::{Ack, Destination};
use crate::error::IngestError;
use crate::metrics::{Metrics, ReplicaLabels};
use crate::sinks::{Backoff, save_json, sleep_or_shutdown};
use yaffle_log::{CursorName, Log, Record};

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

    /// Runs every replica's task until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), IngestError> {
        std::fs::create_dir_all(&self.dir).map_err(IngestError::io(&self.dir))?;
        let distribution = Arc::new(Distribution::new(&self.config.distribution).map_err(IngestError::Config)?);
        let evaluators = self.destinations.len();
        let replicas: usize = self.destinations.iter().map(Vec::len).sum();
        let start = self.log.cursor_position(CursorName::Alert);
        let positions = Arc::new(Mutex::new(vec![start; replicas]));
        let mut tasks = Vec::new();
        let mut slot = 0;
        for (evaluator, dests) in self.destinations.iter().enumerate() {
            for (replica, dest) in dests.iter().enumerate() {
                let path = self.dir.join(format!("evaluator-{}-replica-{}.json", evaluator + 1, replica + 1));
                let task = ReplicaTask {
                    log: Arc::clone(&self.log),
                    dest: Arc::clone(dest),
                    distribution: Arc::clone(&distribution),
                    evaluator,
                    evaluators,
                    progress: load(&path, start)?,
                    path,
                    slot,
                    positions: Arc::clone(&positions),
                    config: self.config.clone(),
                    metrics: Arc::clone(&self.metrics),
                    labels: ReplicaLabels { replica: dest.name() },
                };
                tasks.push(tokio::spawn(task.run(stop.clone())));
                slot += 1;
            }
        }
        for t in tasks {
            t.await.expect("alert sink task panicked")?;
        }
        Ok(())
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

struct ReplicaTask {
    log: Arc<Log>,
    dest: Arc<dyn Destination>,
    distribution: Arc<Distribution>,
    evaluator: usize,
    evaluators: usize,
    progress: Progress,
    path: PathBuf,
    slot: usize,
    positions: Arc<Mutex<Vec<u64>>>,
    config: AlertSinkConfig,
    metrics: Arc<Metrics>,
    labels: ReplicaLabels,
}

impl ReplicaTask {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), IngestError> {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        // Learn who is there before delivering anything: a new instance needs the history.
        let ack = loop {
            match self.dest.status().await {
                Ok(ack) => break ack,
                Err(e) => {
                    tracing::warn!(replica = %self.labels.replica, error = %e, "evaluator unreachable");
                    if sleep_or_shutdown(backoff.next_delay(), &mut stop).await {
                        return Ok(());
                    }
                }
            }
        };
        backoff.reset();
        let mut horizon_ns = ack.horizon_ns();
        let mut reader = self.log.reader_at(self.progress.delivered);
        self.adopt(&ack, &mut reader);
        let mut checkpoints: VecDeque<(i64, u64)> = VecDeque::new();
        let mut persisted = Instant::now();
        loop {
            if *stop.borrow() {
                return self.persist();
            }
            let records = tokio::select! {
                r = reader.next(self.config.read_bytes.as_u64() as usize, Duration::from_millis(200)) => r?,
                _ = stop.changed() => continue,
            };
            if let Some(last) = records.last() {
                let batch = self.route(&records)?;
                if !batch.points.is_empty() {
                    let (ack, accepted) = loop {
                        match self.dest.push(&batch, self.progress.instance.as_deref()).await {
                            Ok(answer) => break answer,
                            Err(e) => {
                                self.metrics.alert_errors.get_or_create(&self.labels).inc();
                                tracing::warn!(replica = %self.labels.replica, error = %e, "push to evaluator failed");
                                if sleep_or_shutdown(backoff.next_delay(), &mut stop).await {
                                    return self.persist();
                                }
                            }
                        }
                    };
                    backoff.reset();
                    horizon_ns = ack.horizon_ns();
                    // A refused push means another instance answered: adopting it seeks back.
                    if self.adopt(&ack, &mut reader) || !accepted {
                        checkpoints.clear();
                        continue;
                    }
                    self.metrics.alert_points.get_or_create(&self.labels).inc_by(batch.points.len() as u64);
                }
                for r in &records {
                    if checkpoints.back().is_none_or(|&(t, _)| r.ingest_time - t >= CHECKPOINT_SPACING_NS) {
                        checkpoints.push_back((r.ingest_time, r.position));
                    }
                }
                self.progress.delivered = last.next;
                // The newest checkpoint at or before `last - horizon` is where a replay must start.
                let limit = last.ingest_time - horizon_ns;
                while checkpoints.len() >= 2 && checkpoints[1].0 <= limit {
                    checkpoints.pop_front();
                }
                if let Some(&(t, pos)) = checkpoints.front()
                    && t <= limit
                {
                    self.progress.rebuild_from = self.progress.rebuild_from.max(pos);
                }
                self.metrics.alert_position.get_or_create(&self.labels).set(last.next as i64);
            }
            if persisted.elapsed() >= PERSIST_EVERY {
                self.persist()?;
                persisted = Instant::now();
            }
        }
    }

    /// Records the instance that answered; when it is not the one the points went to, seeks back to
    /// the rebuild position and returns true.
    fn adopt(&mut self, ack: &Ack, reader: &mut yaffle_log::LogReader) -> bool {
        let restarted = self.progress.instance.as_deref().is_some_and(|i| i != ack.instance);
        self.progress.instance = Some(ack.instance.clone());
        if restarted {
            tracing::info!(
                replica = %self.labels.replica, from = self.progress.rebuild_from, to = self.progress.delivered,
                "evaluator restarted, replaying its horizon"
            );
            self.metrics.alert_replays.get_or_create(&self.labels).inc();
            reader.seek(self.progress.rebuild_from);
            self.progress.delivered = self.progress.rebuild_from;
        }
        restarted
    }

    /// The points of `records` that go to this task's evaluator.
    fn route(&self, records: &[Record]) -> Result<Batch, IngestError> {
        let mut points = Vec::new();
        for r in records {
            let batch = Batch::decode(&r.payload)
                .map_err(|e| IngestError::LogCorrupt { position: r.position, reason: e.to_string() })?;
            points.extend(batch.points.into_iter().filter(|p| {
                let route = self.distribution.route(&p.series, p.series_id);
                Distribution::target(route, self.evaluators) == self.evaluator
            }));
        }
        Ok(Batch::new(points))
    }

    fn persist(&self) -> Result<(), IngestError> {
        save_json(&self.path, &self.progress)?;
        let oldest = {
            let mut positions = self.positions.lock().expect("positions lock");
            positions[self.slot] = self.progress.rebuild_from;
            positions.iter().copied().min().expect("at least one replica")
        };
        Ok(self.log.commit(CursorName::Alert, oldest)?)
    }
}
