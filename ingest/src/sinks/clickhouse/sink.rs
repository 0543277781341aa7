//! The ClickHouse sink's tasks: one per shard.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, info_span};
use yaffle_core::Batch;
use yaffle_store::clickhouse::{Block, BlockBuilder, ClickHouseStore};

use super::ClickHouseSinkConfig;
use super::progress::ProgressFile;
use crate::error::IngestError;
use crate::metrics::{Metrics, ShardLabels};
use crate::sinks::{Backoff, sleep_or_shutdown};
use yaffle_log::{CursorName, Log, LogError, LogReader};

/// Delivers the log to a ClickHouse cluster, one task per shard.
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

/// A shard task stopped because shutdown was requested.
struct Stopped;

impl ClickHouseSink {
    /// A sink keeping its per-shard progress under `dir`; call [`ClickHouseSink::run`] to start it.
    pub fn new(
        log: Arc<Log>,
        store: Arc<ClickHouseStore>,
        config: ClickHouseSinkConfig,
        metrics: Arc<Metrics>,
        dir: PathBuf,
    ) -> Self {
        let positions = Mutex::new(vec![0; store.shards()]);
        Self { inner: Arc::new(Inner { log, store, config, metrics, dir, positions }) }
    }

    /// Creates the schema (retried in the background) and runs one task per shard until `shutdown` turns
    /// true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), IngestError> {
        // The schema is created in the background, retried until the cluster answers, so ingest starts
        // (and inserts queue up per shard) while ClickHouse is down.
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
        let start = self.inner.log.cursor_position(CursorName::Store);
        let shards = self.inner.store.shards();
        let mut files = Vec::with_capacity(shards);
        for shard in 0..shards {
            let file = ProgressFile::open(&self.inner.dir, shard, shards, start)?;
            self.inner.positions.lock().expect("positions lock")[shard] = file.state.position;
            files.push(file);
        }
        let tasks: Vec<_> = files
            .into_iter()
            .enumerate()
            .map(|(shard, file)| {
                let inner = Arc::clone(&self.inner);
                let shutdown = shutdown.clone();
                let span = info_span!("clickhouse_shard", shard = shard + 1);
                tokio::spawn(
                    async move {
                        let result = inner.run_shard(shard, file, shutdown).await;
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "clickhouse shard writer failed and stopped");
                        }
                        result
                    }
                    .instrument(span),
                )
            })
            .collect();
        let mut result = Ok(());
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(IngestError::SinkState(format!("a shard task panicked: {e}"))),
            }
        }
        result
    }
}

impl Inner {
    async fn run_shard(
        &self,
        shard: usize,
        mut file: ProgressFile,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), IngestError> {
        let labels = ShardLabels { shard: shard as u32 + 1 };
        let mut reader = self.log.reader(CursorName::Store);
        if let Some((start, end)) = file.state.pending {
            tracing::info!(start, end, "inserting the block that was pending at the last stop again");
            reader.seek(start);
            let block = self.rebuild(&mut reader, shard, end).await?;
            if self.insert(shard, &block, &mut shutdown).await.is_err() {
                return Ok(());
            }
            self.committed(shard, &mut file, end)?;
        }
        reader.seek(file.state.position);
        tracing::info!(position = file.state.position, "clickhouse shard writer started");
        let mut builder = BlockBuilder::default();
        let (mut start, mut end) = (file.state.position, file.state.position);
        let mut since: Option<Instant> = None;
        let read_bytes = self.config.read_bytes.as_u64() as usize;
        let interval = self.config.flush_interval;
        loop {
            let wait = since.map_or(interval, |s| interval.saturating_sub(s.elapsed())).max(Duration::from_millis(1));
            let stopping = tokio::select! {
                _ = shutdown.changed() => true,
                records = reader.next(read_bytes, wait) => {
                    match records {
                        Ok(records) => for r in records {
                            self.add(&mut builder, shard, r.position, &r.payload);
                            end = r.next;
                            since.get_or_insert_with(Instant::now);
                        },
                        Err(LogError::ShuttingDown) => return Ok(()),
                        Err(e) => {
                            tracing::error!(error = %e, "reading the log failed");
                            if sleep_or_shutdown(self.config.retry_max, &mut shutdown).await {
                                return Ok(());
                            }
                        }
                    }
                    false
                }
            };
            let full =
                builder.rows() >= self.config.max_rows || builder.bytes() as u64 >= self.config.max_bytes.as_u64();
            let due = since.is_some_and(|s| s.elapsed() >= interval);
            if end > start && (full || due || stopping) {
                if builder.rows() > 0 {
                    file.begin(start, end)?;
                    let block = builder.finish();
                    if self.insert(shard, &block, &mut shutdown).await.is_err() {
                        // The range stays pending: the next start inserts the same block again.
                        return Ok(());
                    }
                    self.metrics.clickhouse_rows.get_or_create(&labels).inc_by(block.rows as u64);
                    self.metrics.clickhouse_blocks.get_or_create(&labels).inc();
                    self.metrics.store_points.inc_by(block.rows as u64);
                    self.metrics.store_flushes.inc();
                }
                self.committed(shard, &mut file, end)?;
                start = end;
                since = None;
            }
            if stopping {
                tracing::info!(position = file.state.position, "clickhouse shard writer stopped");
                return Ok(());
            }
        }
    }

    /// Adds a log record's rows that belong to `shard`.
    fn add(&self, builder: &mut BlockBuilder, shard: usize, position: u64, payload: &[u8]) {
        match Batch::decode(payload) {
            Ok(batch) => {
                for p in &batch.points {
                    let (route, target) = self.store.place(p);
                    if target == shard {
                        builder.push(p, route);
                    }
                }
            }
            Err(e) => tracing::error!(position, error = %e, "skipped an undecodable log record"),
        }
    }

    /// The block of `shard`'s rows in the log from the reader's position up to `end`, exactly as it was
    /// first built.
    async fn rebuild(&self, reader: &mut LogReader, shard: usize, end: u64) -> Result<Block, IngestError> {
        let mut builder = BlockBuilder::default();
        while reader.position() < end {
            let records = reader.next(self.config.read_bytes.as_u64() as usize, Duration::from_secs(1)).await?;
            if records.is_empty() {
                return Err(IngestError::SinkState(format!(
                    "pending block ends at log position {end}, but the log ends at {}",
                    reader.position()
                )));
            }
            for r in records.into_iter().filter(|r| r.position < end) {
                self.add(&mut builder, shard, r.position, &r.payload);
            }
        }
        Ok(builder.finish())
    }

    /// Inserts until it works (every replica in turn, then backoff); `Err` if shutdown came first.
    async fn insert(&self, shard: usize, block: &Block, shutdown: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        loop {
            match self.store.insert(shard, block).await {
                Ok(replica) => {
                    tracing::debug!(rows = block.rows, replica, "block inserted");
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.clickhouse_errors.get_or_create(&ShardLabels { shard: shard as u32 + 1 }).inc();
                    self.metrics.store_errors.inc();
                    tracing::warn!(error = %e, rows = block.rows, "shard unavailable, retrying");
                    if sleep_or_shutdown(backoff.next_delay(), shutdown).await {
                        return Err(Stopped);
                    }
                }
            }
        }
    }

    /// Persists a shard's position and moves the log's `store` cursor to the slowest shard.
    fn committed(&self, shard: usize, file: &mut ProgressFile, position: u64) -> Result<(), IngestError> {
        file.commit(position)?;
        self.metrics.clickhouse_position.get_or_create(&ShardLabels { shard: shard as u32 + 1 }).set(position as i64);
        let slowest = {
            let mut positions = self.positions.lock().expect("positions lock");
            positions[shard] = position;
            positions.iter().copied().min().unwrap_or(position)
        };
        // Shards may commit at once, in any order: the cursor keeps the largest position it was given.
        Ok(self.log.commit(CursorName::Store, slowest)?)
    }
}
