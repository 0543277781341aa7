//! Downsampling on the durable log (standalone mode), on the sink runtime ([`yaffle_log::sink`]).
//!
//! It follows the workers' contract ([`crate::kafka`]) with the log's `downsample` cursor in place of
//! a partition: the cursor is committed at the position where a replay must start (the log position
//! at [`DownsampleConfig::replay_from`] of the emitted watermark, by ingest time, but never more than
//! [`DownsampleConfig::replay_window`] before the newest record read, so that an import of old data
//! cannot pin the cursor), with the emitted watermark as the cursor's metadata. After a restart (of the process, or of this sink after a fatal
//! error) the reader starts at the cursor, rebuilds the open windows and emits only windows past the
//! recorded watermark. Undecodable records are the runtime's: skipped, counted and logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use yaffle_core::batch::DecodeError;
use yaffle_log::sink::{Delivery, DriverConfig, Flushed, SinkError, Supervisor};
use yaffle_log::{CursorName, Log, Record};
use yaffle_store::Store;

use crate::kafka::{commit_metadata, parse_metadata};
use crate::{DownsampleConfig, Engine, Metrics};

/// Log bytes read per step.
const READ_BYTES: usize = 1 << 20;

/// Standalone downsampling: the log's `downsample` cursor into rollups in `store`.
#[derive(Debug)]
pub struct LogDownsampler {
    log: Arc<Log>,
    store: Arc<dyn Store>,
    config: DownsampleConfig,
    metrics: Arc<Metrics>,
}

impl LogDownsampler {
    /// A downsampler; [`LogDownsampler::spawn`] starts it.
    pub fn new(log: Arc<Log>, store: Arc<dyn Store>, config: DownsampleConfig, metrics: Arc<Metrics>) -> Self {
        Self { log, store, config, metrics }
    }

    /// Runs the sink `downsample` under `supervisor` until `shutdown` turns true.
    pub fn spawn(self, supervisor: &Arc<Supervisor>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let driver = DriverConfig {
            read_bytes: READ_BYTES,
            flush_interval: self.config.commit_interval,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        };
        let log = Arc::clone(&self.log);
        let this = Arc::new(self);
        let make = move || LogDelivery {
            engine: Engine::new(this.config.windows(), Arc::clone(&this.metrics)),
            d: Arc::clone(&this),
            newest: i64::MIN,
        };
        supervisor.spawn("downsample", log, CursorName::Downsample, driver, make, shutdown)
    }
}

struct LogDelivery {
    d: Arc<LogDownsampler>,
    engine: Engine,
    /// The ingest time of the newest record read.
    newest: i64,
}

impl Delivery for LogDelivery {
    async fn start(&mut self) -> Result<u64, SinkError> {
        let log = &self.d.log;
        self.engine.assign(0, parse_metadata(&log.cursor_metadata(CursorName::Downsample)));
        Ok(log.cursor_position(CursorName::Downsample))
    }

    fn add(&mut self, record: &Record) -> Result<(), DecodeError> {
        self.newest = self.newest.max(record.ingest_time);
        self.engine.add(0, &record.payload, record.ingest_time, false).map(drop)
    }

    fn flush_now(&self, due: bool) -> bool {
        due || self.engine.pending().len() >= self.d.config.max_pending_rows
    }

    /// Writes finished rows, then moves the cursor to where a replay of the open windows starts.
    async fn flush(&mut self, end: u64) -> Result<Flushed, SinkError> {
        let LogDownsampler { log, store, config, .. } = &*self.d;
        self.engine.report_late();
        self.engine.write_pending(store.as_ref()).await.map_err(SinkError::classify)?;
        if let Some(emitted) = self.engine.emitted_through(0) {
            let from = config.replay_from(emitted).max(self.newest.saturating_sub(config.replay_window()));
            let replay_from = log.position_at_time(from)?.min(end);
            log.commit_with_metadata(CursorName::Downsample, replay_from, &commit_metadata(Some(emitted)))?;
        }
        Ok(Flushed::Done)
    }
}
