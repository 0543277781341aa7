//! The store sink's delivery, run on the sink runtime ([`yaffle_log::sink`]).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use yaffle_core::batch::DecodeError;
use yaffle_core::{Batch, Point};
use yaffle_log::sink::{Delivery, DriverConfig, Flushed, SinkError, Supervisor};
use yaffle_log::{CursorName, Log, Record};
use yaffle_store::PositionedStore;

use super::StoreSinkConfig;
use crate::metrics::Metrics;

/// Reads the `store` cursor and writes to a store that records the log position with the points.
#[derive(Debug, Clone)]
pub struct StoreSink {
    log: Arc<Log>,
    store: Arc<dyn PositionedStore>,
    config: StoreSinkConfig,
    metrics: Arc<Metrics>,
}

impl StoreSink {
    /// A sink; [`StoreSink::spawn`] starts it.
    pub fn new(log: Arc<Log>, store: Arc<dyn PositionedStore>, config: StoreSinkConfig, metrics: Arc<Metrics>) -> Self {
        Self { log, store, config, metrics }
    }

    /// Runs the sink `store` under `supervisor` until `shutdown` turns true, then delivers what it
    /// holds (one attempt) and returns.
    pub fn spawn(self, supervisor: &Arc<Supervisor>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let c = &self.config;
        let driver = DriverConfig {
            read_bytes: c.read_bytes.as_u64() as usize,
            flush_interval: c.flush_interval,
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
        };
        let log = Arc::clone(&self.log);
        let make = move || StoreDelivery { sink: self.clone(), points: Vec::new() };
        supervisor.spawn("store", log, CursorName::Store, driver, make, shutdown)
    }
}

struct StoreDelivery {
    sink: StoreSink,
    points: Vec<Point>,
}

impl Delivery for StoreDelivery {
    async fn start(&mut self) -> Result<u64, SinkError> {
        let log = &self.sink.log;
        let stored = self.sink.store.committed_position().await.map_err(SinkError::classify)?;
        // After a crash between the store's write and the cursor's commit, the store knows better.
        Ok(stored.max(log.cursor_position(CursorName::Store)).min(log.end()))
    }

    fn add(&mut self, record: &Record) -> Result<(), DecodeError> {
        self.points.extend(Batch::decode(&record.payload)?.points);
        Ok(())
    }

    fn flush_now(&self, due: bool) -> bool {
        due || self.points.len() >= self.sink.config.max_points
    }

    async fn flush(&mut self, end: u64) -> Result<Flushed, SinkError> {
        let StoreSink { log, store, metrics, .. } = &self.sink;
        if !self.points.is_empty() {
            if let Err(e) = store.write_points(&self.points, end).await {
                metrics.store_errors.inc();
                return Err(SinkError::classify(e));
            }
            metrics.store_points.inc_by(self.points.len() as u64);
            metrics.store_flushes.inc();
        }
        log.commit(CursorName::Store, end)?;
        tracing::debug!(points = self.points.len(), position = end, "flushed to the store");
        self.points.clear();
        Ok(Flushed::Done)
    }
}
