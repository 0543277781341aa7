use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use tokio::sync::watch;
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};
use yaffle_store::embedded::{EmbeddedConfig, EmbeddedStore};
use yaffle_store::{PositionedStore, QueryResult, RollupRow, Store, StoreError};

use super::*;
use crate::metrics::Metrics;
use yaffle_log::{CursorName, Log, LogConfig};

fn batch(from: i64, n: i64) -> Vec<u8> {
    let key = Arc::new(SeriesKey::new("db", "m", vec![]));
    Batch::new(
        (from..from + n).map(|i| Point::new(Arc::clone(&key), vec![("v".into(), FieldValue::Integer(i))], i)).collect(),
    )
    .encode()
}

fn config() -> StoreSinkConfig {
    StoreSinkConfig {
        flush_interval: Duration::from_millis(50),
        retry_initial: Duration::from_millis(10),
        ..StoreSinkConfig::default()
    }
}

async fn count(store: &dyn Store) -> i64 {
    let r = store.query("SELECT count(*) AS n FROM points").await.unwrap();
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn wait_for(store: &dyn Store, n: i64) {
    for _ in 0..200 {
        if count(store).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("store has {} points, expected {n}", count(store).await);
}

/// A store that fails its first `failures` writes, retryably or not: a mock beside the real store, to
/// drive retries and restarts.
#[derive(Debug)]
pub(crate) struct Flaky {
    inner: EmbeddedStore,
    failures: AtomicUsize,
    fatal: bool,
}

impl Flaky {
    pub(crate) fn new(inner: EmbeddedStore, failures: usize, fatal: bool) -> Self {
        Self { inner, failures: AtomicUsize::new(failures), fatal }
    }
}

#[async_trait::async_trait]
impl PositionedStore for Flaky {
    async fn write_points(&self, points: &[Point], position: u64) -> Result<(), StoreError> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1)).is_ok() {
            return Err(if self.fatal {
                StoreError::Config("injected refusal".into())
            } else {
                StoreError::Execution("injected failure".into())
            });
        }
        self.inner.write_points(points, position).await
    }
    async fn committed_position(&self) -> Result<u64, StoreError> {
        self.inner.committed_position().await
    }
}

#[async_trait::async_trait]
impl Store for Flaky {
    async fn query(&self, sql: &str) -> Result<QueryResult, StoreError> {
        self.inner.query(sql).await
    }
    async fn enforce_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        self.inner.enforce_retention(now_ns).await
    }
    async fn write_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError> {
        self.inner.write_rollups(rows).await
    }
    async fn delete_points(&self, from_ns: i64, to_ns: i64, shards: &[usize]) -> Result<(), StoreError> {
        self.inner.delete_points(from_ns, to_ns, shards).await
    }
    async fn append_points(&self, points: &[Point], shards: &[usize]) -> Result<u64, StoreError> {
        self.inner.append_points(points, shards).await
    }
    async fn select_series(&self, select: &yaffle_store::SeriesSelect) -> Result<yaffle_store::Selected, StoreError> {
        self.inner.select_series(select).await
    }
}

#[tokio::test]
async fn delivers_the_log_and_commits_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Arc::clone(&metrics.log)).unwrap());
    let store: Arc<dyn PositionedStore> =
        Arc::new(EmbeddedStore::open(dir.path(), &EmbeddedConfig::default()).await.unwrap());
    let (stop, stopped) = watch::channel(false);
    let task = StoreSink::new(Arc::clone(&log), Arc::clone(&store), config(), Arc::clone(&metrics))
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    for i in 0..10 {
        log.append(batch(i * 100, 100)).await.unwrap();
    }
    wait_for(store.as_ref(), 1000).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(count(store.as_ref()).await, 1000);
    assert_eq!(log.cursor_position(CursorName::Store), log.end());
    assert_eq!(metrics.store_points.get(), 1000);
}

#[tokio::test]
async fn a_failing_store_is_retried_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Arc::clone(&metrics.log)).unwrap());
    let inner = EmbeddedStore::open(dir.path(), &EmbeddedConfig::default()).await.unwrap();
    let store: Arc<dyn PositionedStore> = Arc::new(Flaky::new(inner, 3, false));
    let (_stop, stopped) = watch::channel(false);
    StoreSink::new(Arc::clone(&log), Arc::clone(&store), config(), Arc::clone(&metrics))
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    for i in 0..5 {
        log.append(batch(i * 10, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_for(store.as_ref(), 50).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(store.as_ref()).await, 50);
    let distinct = store.query("SELECT count(DISTINCT value_int) AS n FROM points").await.unwrap();
    assert_eq!(distinct.batches[0].column(0).as_primitive::<Int64Type>().value(0), 50);
    assert_eq!(metrics.store_errors.get(), 3);
}

#[tokio::test]
async fn resumes_from_the_store_position_when_the_cursor_lags_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Arc::clone(&metrics.log)).unwrap());
    let store: Arc<dyn PositionedStore> =
        Arc::new(EmbeddedStore::open(dir.path(), &EmbeddedConfig::default()).await.unwrap());
    // The store has the first record but the cursor was never committed (crash between the two).
    let first = log.append(batch(0, 10)).await.unwrap();
    let key = Batch::decode(&batch(0, 10)).unwrap().points;
    store.write_points(&key, first.next).await.unwrap();
    log.append(batch(10, 10)).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = StoreSink::new(Arc::clone(&log), Arc::clone(&store), config(), metrics)
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    wait_for(store.as_ref(), 20).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(count(store.as_ref()).await, 20);
}
