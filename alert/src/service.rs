//! The evaluator as a running service: a task that takes batches as they come (evaluating the rules
//! they touch once per burst), ticks, reloads changed rule files, and hands due alerts to the notifier.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use yaffle_core::Batch;

use crate::config::AlertConfig;
use crate::evaluator::Evaluator;
use crate::metrics::Metrics;
use crate::notifier::Notifier;
use crate::recorder::Recorder;
use crate::rules::{RuleError, RuleSet};

/// Batches waiting for the evaluator; pushes wait when it is full.
const QUEUE: usize = 64;

/// What a source of points learns from the evaluator it pushes to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Changes whenever the evaluator restarts with empty state: a source that sees it change
    /// replays the last `horizon_seconds` of points so the state is rebuilt.
    pub instance: String,
    /// How much history rebuilds the evaluator's state.
    pub horizon_seconds: f64,
}

/// A running evaluator.
#[derive(Debug, Clone)]
pub struct Service {
    /// The state, shared with the HTTP API.
    pub evaluator: Arc<Mutex<Evaluator>>,
    input: mpsc::Sender<Batch>,
    instance: Arc<str>,
    config: Arc<AlertConfig>,
    metrics: Arc<Metrics>,
}

impl Service {
    /// Loads the rules and starts the evaluation loop and the notifier; both stop when `stop` turns true.
    pub fn start(
        config: AlertConfig,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, Vec<RuleError>> {
        let rules = Arc::new(load(&config)?);
        tracing::info!(files = rules.files.len(), rules = rules.rule_count(), "rules loaded");
        metrics.last_reload_successful.set(1);
        let evaluator = Arc::new(Mutex::new(Evaluator::new(rules, &config, Arc::clone(&metrics))));
        let notifier = Notifier::start(&config, Arc::clone(&metrics), stop.clone());
        let recorder = Recorder::start(&config, Arc::clone(&metrics), stop.clone());
        let (input, rx) = mpsc::channel(QUEUE);
        let instance: Arc<str> = Arc::from(format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                &[crate::evaluator::wall_ns().to_le_bytes(), u64::from(std::process::id()).to_le_bytes()].concat()
            )
        ));
        let service = Self { evaluator, input, instance, config: Arc::new(config), metrics };
        tokio::spawn(service.clone().run(rx, notifier, recorder, stop));
        Ok(service)
    }

    /// Queues a batch for evaluation, waiting while the evaluator is behind.
    pub async fn push(&self, batch: Batch) -> Result<Status, String> {
        self.input.send(batch).await.map_err(|_| "the evaluator is stopping".to_string())?;
        Ok(self.status())
    }

    /// This evaluator's identity and rebuild horizon.
    pub fn status(&self) -> Status {
        let horizon = self.evaluator.lock().expect("evaluator lock").horizon();
        Status { instance: self.instance.to_string(), horizon_seconds: horizon.as_secs_f64() }
    }

    /// Reloads the rule files; on an error the current rules stay.
    pub fn reload(&self) -> Result<(), Vec<RuleError>> {
        self.metrics.reloads.inc();
        match load(&self.config) {
            Ok(rules) => {
                tracing::info!(files = rules.files.len(), rules = rules.rule_count(), "rules reloaded");
                self.evaluator.lock().expect("evaluator lock").reload(Arc::new(rules));
                self.metrics.last_reload_successful.set(1);
                Ok(())
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "rule reload failed, keeping the current rules");
                }
                self.metrics.reload_failures.inc();
                self.metrics.last_reload_successful.set(0);
                Err(errors)
            }
        }
    }

    async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        notifier: Notifier,
        recorder: Recorder,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut files = files_fingerprint(&self.config.rule_files);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let sighup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = rx.recv() => {
                    let Some(batch) = batch else { return };
                    // Take the whole burst, then evaluate once.
                    let mut points = batch.points;
                    while let Ok(more) = rx.try_recv() {
                        points.extend(more.points);
                    }
                    let (due, recorded) = {
                        let mut evaluator = self.evaluator.lock().expect("evaluator lock");
                        (evaluator.ingest_and_evaluate(points), evaluator.take_recorded())
                    };
                    notifier.send(&due);
                    recorder.send(recorded);
                }
                _ = tick.tick() => {
                    let now = files_fingerprint(&self.config.rule_files);
                    if now != files {
                        files = now;
                        tracing::info!("rule files changed");
                        let _ = self.reload();
                    }
                    let (due, recorded) = {
                        let mut evaluator = self.evaluator.lock().expect("evaluator lock");
                        (evaluator.tick(), evaluator.take_recorded())
                    };
                    notifier.send(&due);
                    recorder.send(recorded);
                }
                _ = sighup => {
                    tracing::info!("SIGHUP");
                    let _ = self.reload();
                }
                _ = stop.changed() => return,
            }
        }
    }
}

/// Names, sizes and modification times of the rule files, to notice edits without reading them.
fn files_fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    for p in paths {
        let files: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(p).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
        } else {
            vec![p.clone()]
        };
        for f in files {
            let meta = std::fs::metadata(&f).ok();
            out.push((f, meta.as_ref().map_or(0, |m| m.len()), meta.and_then(|m| m.modified().ok())));
        }
    }
    out.sort();
    out
}

/// Loads the configured rule files; recording rules need somewhere to write their results.
fn load(config: &AlertConfig) -> Result<RuleSet, Vec<RuleError>> {
    let rules = RuleSet::load(&config.rule_files, config.default_interval)?;
    if config.recording.url.is_empty()
        && let Some(g) = rules.groups.iter().find(|g| !g.records.is_empty())
    {
        return Err(vec![RuleError {
            file: g.file.clone(),
            group: Some(g.name.clone()),
            rule: None,
            message: format!(
                "recording rule {:?} has nowhere to write: set alert.recording.url to ingest's remote_write URL",
                g.records[0].name
            ),
        }]);
    }
    Ok(rules)
}
