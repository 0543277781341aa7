//! The ClickHouse sink: one delivery per shard on the sink runtime ([`yaffle_log::sink`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use yaffle_core::Batch;
use yaffle_core::batch::DecodeError;
use yaffle_log::sink::{Backoff, Delivery, DriverConfig, Flushed, SinkError, Supervisor, sleep_or_shutdown};
use yaffle_log::{CursorName, Log, Record};
use yaffle_store::clickhouse::{Block, BlockBuilder, ClickHouseStore};

use super::ClickHouseSinkConfig;
use super::progress::ProgressFile;
use crate::metrics::{Metrics, ShardLabels};

/// Delivers the log to a ClickHouse cluster, one sink (`clickhouse shard N`) per shard.
///
/// A shard records the log range of a block before inserting it; after a crash it rebuilds the block
/// from exactly that range and inserts it again, so ClickHouse's block deduplication drops the copy.
#[derive(Debug)]
pub struct ClickHouseSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Arc<Log>,
    store: Arc<ClickHouseStore>,
    config: ClickHouseSinkConfig,
    metrics: Arc<Metrics>,
    /// Where the shards' progress files live.
    dir: PathBuf,
    /// Each shard's position; the log's `store` cursor is their minimum.
    positions: Mutex<Vec<u64>>,
}

impl ClickHouseSink {
    /// A sink keeping its per-shard progress under `dir`; [`ClickHouseSink::spawn`] starts it.
    pub fn new(
        log: Arc<Log>,
        store: Arc<ClickHouseStore>,
        config: ClickHouseSinkConfig,
        metrics: Arc<Metrics>,
        dir: PathBuf,
    ) -> Self {
        // Until a shard has read its progress, it is known to have everything before the cursor.
        let positions = Mutex::new(vec![log.cursor_position(CursorName::Store); store.shards()]);
        Self { inner: Arc::new(Inner { log, store, config, metrics, dir, positions }) }
    }

    /// Creates the schema (retried in the background, so ingest starts and inserts queue up per shard
    /// while ClickHouse is down) and runs one sink per shard under `supervisor` until `shutdown`.
    pub fn spawn(self, supervisor: &Arc<Supervisor>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let (inner, mut stop) = (Arc::clone(&self.inner), shutdown.clone());
        tokio::spawn(async move {
            let mut backoff = Backoff::new(inner.config.retry_initial, inner.config.retry_max);
            while let Err(e) = inner.store.init().await {
                tracing::warn!(error = %e, "clickhouse schema not created yet, retrying");
                if sleep_or_shutdown(backoff.next_delay(), &mut stop).await {
                    return;
                }
            }
        });
        let c = &self.inner.config;
        let driver = DriverConfig {
            read_bytes: c.read_bytes.as_u64() as usize,
            flush_interval: c.flush_interval,
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
        };
        (0..self.inner.store.shards())
            .map(|shard| {
                let inner = Arc::clone(&self.inner);
                let make = move || ShardDelivery {
                    inner: Arc::clone(&inner),
                    shard,
                    file: None,
                    builder: BlockBuilder::default(),
                    block: None,
                    start: 0,
                    cut: None,
                };
                let name = format!("clickhouse shard {}", shard + 1);
                supervisor.spawn(name, Arc::clone(&self.inner.log), CursorName::Store, driver, make, shutdown.clone())
            })
            .collect()
    }
}

/// One shard's delivery.
struct ShardDelivery {
    inner: Arc<Inner>,
    shard: usize,
    file: Option<ProgressFile>,
    builder: BlockBuilder,
    /// The block being inserted, kept for retries.
    block: Option<Block>,
    /// Where the held range starts.
    start: u64,
    /// The end of a block pending at the last stop, rebuilt from `start` exactly.
    cut: Option<u64>,
}

impl ShardDelivery {
    fn labels(&self) -> ShardLabels {
        ShardLabels { shard: self.shard as u32 + 1 }
    }

    fn file(&mut self) -> &mut ProgressFile {
        self.file.as_mut().expect("opened by start")
    }
}

impl Delivery for ShardDelivery {
    async fn start(&mut self) -> Result<u64, SinkError> {
        let inner = &self.inner;
        let cursor = inner.log.cursor_position(CursorName::Store);
        let file =
            ProgressFile::open(&inner.dir, self.shard, inner.store.shards(), cursor).map_err(SinkError::classify)?;
        let position = file.state.position;
        inner.positions.lock().expect("positions lock")[self.shard] = position;
        self.start = match file.state.pending {
            Some((start, end)) => {
                tracing::info!(start, end, "inserting the block that was pending at the last stop again");
                self.cut = Some(end);
                start
            }
            None => position,
        };
        self.file = Some(file);
        Ok(self.start)
    }

    fn add(&mut self, record: &Record) -> Result<(), DecodeError> {
        for p in &Batch::decode(&record.payload)?.points {
            let (route, target) = self.inner.store.place(p);
            if target == self.shard {
                self.builder.push(p, route);
            }
        }
        Ok(())
    }

    fn flush_now(&self, due: bool) -> bool {
        let c = &self.inner.config;
        // A pending block is cut only where it ended (`cut_at`), never by size or time.
        self.cut.is_none()
            && (due || self.builder.rows() >= c.max_rows || self.builder.bytes() as u64 >= c.max_bytes.as_u64())
    }

    fn cut_at(&self) -> Option<u64> {
        self.cut
    }

    async fn flush(&mut self, end: u64) -> Result<Flushed, SinkError> {
        if self.cut.is_some_and(|cut| end != cut) {
            tracing::warn!(
                end,
                cut = self.cut,
                "the pending block's range no longer ends on a record; inserting it as read"
            );
        }
        if self.block.is_none() && self.builder.rows() > 0 {
            let start = self.start;
            self.file().begin(start, end).map_err(SinkError::classify)?;
            self.block = Some(self.builder.finish());
        }
        if let Some(block) = &self.block {
            let (inner, labels) = (&self.inner, self.labels());
            match inner.store.insert(self.shard, block).await {
                Ok(replica) => tracing::debug!(rows = block.rows, replica, "block inserted"),
                Err(e) => {
                    inner.metrics.clickhouse_errors.get_or_create(&labels).inc();
                    inner.metrics.store_errors.inc();
                    // Every replica failed: most often down or unreachable, so retried (the error
                    // text stays in `/health` while it lasts).
                    return Err(SinkError::retryable(e));
                }
            }
            inner.metrics.clickhouse_rows.get_or_create(&labels).inc_by(block.rows as u64);
            inner.metrics.clickhouse_blocks.get_or_create(&labels).inc();
            inner.metrics.store_points.inc_by(block.rows as u64);
            inner.metrics.store_flushes.inc();
            self.block = None;
        }
        self.committed(end)?;
        self.start = end;
        self.cut = None;
        Ok(Flushed::Done)
    }
}

impl ShardDelivery {
    /// Persists the shard's position and moves the log's `store` cursor to the slowest shard.
    fn committed(&mut self, position: u64) -> Result<(), SinkError> {
        self.file().commit(position).map_err(SinkError::classify)?;
        let inner = &self.inner;
        inner.metrics.clickhouse_position.get_or_create(&self.labels()).set(position as i64);
        let slowest = {
            let mut positions = inner.positions.lock().expect("positions lock");
            positions[self.shard] = position;
            positions.iter().copied().min().unwrap_or(position)
        };
        // Shards may commit at once, in any order: the cursor keeps the largest position it was given.
        Ok(inner.log.commit(CursorName::Store, slowest)?)
    }
}
