//! Writes recording rule results back through ingest: Prometheus remote_write to
//! `alert.recording.url`, retried with backoff while ingest is unreachable or answers 5xx, dropped
//! (and counted) when ingest refuses them (4xx) or the queue is full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{Notify, watch};
use yaffle_core::remote_write::{TimeSeries, WriteRequest};

use crate::config::AlertConfig;
use crate::metrics::{Metrics, PointLabels};

/// Most series in one write.
const MAX_BATCH: usize = 10_000;

/// The queue of results and the task that writes it.
#[derive(Debug, Clone)]
pub struct Recorder {
    queue: Arc<std::sync::Mutex<VecDeque<TimeSeries>>>,
    wake: Arc<Notify>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Starts the writer; without `alert.recording.url` results are counted as failed and dropped.
    pub fn start(config: &AlertConfig, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Self {
        let recorder = Self {
            queue: Default::default(),
            wake: Arc::new(Notify::new()),
            capacity: config.recording.queue.max(1),
            metrics,
        };
        if !config.recording.url.is_empty() {
            let mut client = reqwest::Client::builder().timeout(config.recording.timeout);
            if !config.tls_ca.as_os_str().is_empty() {
                for ca in crate::config::read_ca(&config.tls_ca).unwrap_or_default() {
                    client = client.add_root_certificate(ca);
                }
            }
            let client = client.build().expect("http client");
            tokio::spawn(recorder.clone().run(client, config.recording.clone(), stop));
        }
        recorder
    }

    /// Queues results for writing.
    pub fn send(&self, series: Vec<TimeSeries>) {
        if series.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.extend(series);
        let over = queue.len().saturating_sub(self.capacity);
        if over > 0 {
            queue.drain(..over);
            self.count("dropped", over);
        }
        drop(queue);
        self.wake.notify_one();
    }

    fn count(&self, outcome: &'static str, n: usize) {
        self.metrics.recorded.get_or_create(&PointLabels { outcome }).inc_by(n as u64);
    }

    async fn run(
        self,
        client: reqwest::Client,
        config: crate::config::RecordingConfig,
        mut stop: watch::Receiver<bool>,
    ) {
        let url = match reqwest::Url::parse_with_params(&config.url, [("db", config.database.as_str())]) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(url = %config.url, error = %e, "alert.recording.url is not a URL; recording rule results are dropped");
                return;
            }
        };
        loop {
            let batch: Vec<TimeSeries> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.changed() => return,
                }
            }
            let n = batch.len();
            let body = snap::raw::Encoder::new()
                .compress_vec(&WriteRequest { timeseries: batch }.encode_to_vec())
                .expect("snappy compresses any input");
            let mut delay = Duration::from_millis(100);
            loop {
                let mut request = client
                    .post(url.clone())
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body.clone());
                if !config.token.is_empty() {
                    request = request.bearer_auth(&config.token);
                }
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        self.count("written", n);
                        break;
                    }
                    Ok(r) if r.status().is_client_error() => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::warn!(%status, answer = %text, "ingest refused recording rule results");
                        self.count("failed", n);
                        break;
                    }
                    outcome => {
                        let why = match outcome {
                            Ok(r) => r.status().to_string(),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(error = %why, retry_in = ?delay, "writing recording rule results failed");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => {
                                self.count("failed", n);
                                return;
                            }
                        }
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }
}
