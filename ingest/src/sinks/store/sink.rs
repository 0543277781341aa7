//! The store sink's task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::instrument;
use yaffle_core::{Batch, Point};
use yaffle_store::PositionedStore;

use super::StoreSinkConfig;
use crate::metrics::Metrics;
use crate::sinks::{Backoff, sleep_or_shutdown};
use yaffle_log::{CursorName, Log};

/// Reads the `store` cursor and writes to a store.
#[derive(Debug)]
pub struct StoreSink {
    log: Arc<Log>,
    store: Arc<dyn PositionedStore>,
    config: StoreSinkConfig,
    metrics: Arc<Metrics>,
}

struct Pending {
    points: Vec<Point>,
    /// Log position after the last record read.
    end: u64,
    since: Option<Instant>,
}

impl StoreSink {
    /// A sink; call [`StoreSink::run`] to start it.
    pub fn new(log: Arc<Log>, store: Arc<dyn PositionedStore>, config: StoreSinkConfig, metrics: Arc<Metrics>) -> Self {
        Self { log, store, config, metrics }
    }

    /// Runs until `shutdown` turns true, then flushes what it holds (one attempt) and returns.
    #[instrument(name = "store_sink", skip_all)]
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        let start = loop {
            match self.store.committed_position().await {
                Ok(p) => break p.max(self.log.cursor_position(CursorName::Store)),
                Err(e) => {
                    tracing::warn!(error = %e, "store not ready, retrying");
                    if sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
                        return;
                    }
                }
            }
        };
        let mut reader = self.log.reader(CursorName::Store);
        reader.seek(start.min(self.log.end()));
        tracing::info!(position = reader.position(), "store sink started");
        let mut pending = Pending { points: Vec::new(), end: reader.position(), since: None };
        let read_bytes = self.config.read_bytes.as_u64() as usize;
        loop {
            let wait = pending
                .since
                .map_or(self.config.flush_interval, |s| self.config.flush_interval.saturating_sub(s.elapsed()));
            tokio::select! {
                _ = shutdown.changed() => {
                    if !pending.points.is_empty() {
                        let _ = self.flush(&mut pending).await;
                    }
                    tracing::info!(position = pending.end, "store sink stopped");
                    return;
                }
                records = reader.next(read_bytes, wait.max(Duration::from_millis(1))) => match records {
                    Ok(records) => {
                        for r in records {
                            match Batch::decode(&r.payload) {
                                Ok(b) => pending.points.extend(b.points),
                                Err(e) => tracing::error!(position = r.position, error = %e, "skipped an undecodable log record"),
                            }
                            pending.since.get_or_insert_with(Instant::now);
                            pending.end = r.next;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading the log failed");
                        if sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
                            return;
                        }
                    }
                },
            }
            let due = pending.since.is_some_and(|s| s.elapsed() >= self.config.flush_interval);
            if due || pending.points.len() >= self.config.max_points {
                while let Err(e) = self.flush(&mut pending).await {
                    tracing::warn!(error = %e, points = pending.points.len(), "store write failed, retrying");
                    if sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
                        return;
                    }
                }
                backoff.reset();
            }
        }
    }

    async fn flush(&self, pending: &mut Pending) -> Result<(), String> {
        if !pending.points.is_empty() {
            if let Err(e) = self.store.write_points(&pending.points, pending.end).await {
                self.metrics.store_errors.inc();
                return Err(e.to_string());
            }
            self.metrics.store_points.inc_by(pending.points.len() as u64);
            self.metrics.store_flushes.inc();
        }
        self.log.commit(CursorName::Store, pending.end).map_err(|e| e.to_string())?;
        tracing::debug!(points = pending.points.len(), position = pending.end, "flushed to the store");
        pending.points.clear();
        pending.since = None;
        Ok(())
    }
}
