//! The ClickHouse sink on the real 2x2 cluster (`scripts/clickhouse-cluster`). Faults (dead replicas,
//! a whole shard down) are in the end-to-end tests, which run alone.

use std::sync::Arc;
use std::time::Duration;
use yaffle_core::ErrorStatus;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use tokio::sync::watch;
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};
use yaffle_store::Store;
use yaffle_store::clickhouse::testing::{fresh_config, sync_replicas};
use yaffle_store::clickhouse::{BlockBuilder, ClickHouseStore};

use super::*;
use crate::metrics::Metrics;
use yaffle_log::{CursorName, Log, LogConfig};

/// `n` points of `hosts` series, values `from..from+n`.
fn batch(from: i64, n: i64, hosts: i64) -> Batch {
    Batch::new(
        (from..from + n)
            .map(|i| {
                let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), format!("h{}", i % hosts))]));
                Point::new(key, vec![("v".into(), FieldValue::Integer(i))], 1_700_000_000_000_000_000 + i)
            })
            .collect(),
    )
}

fn config() -> ClickHouseSinkConfig {
    ClickHouseSinkConfig { flush_interval: Duration::from_millis(100), ..ClickHouseSinkConfig::default() }
}

async fn count(store: &dyn Store, sql: &str) -> u64 {
    let r = store.query(sql).await.unwrap();
    r.batches[0].column(0).as_primitive::<UInt64Type>().value(0)
}

/// Waits until the cluster holds `n` rows, then until every replica does (a read picks any replica).
async fn wait_for(store: &ClickHouseStore, n: u64) {
    for _ in 0..300 {
        if count(store, "SELECT count() FROM points").await >= n {
            sync_replicas(store).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cluster has {} rows, expected {n}", count(store, "SELECT count() FROM points").await);
}

struct Setup {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    store: Arc<ClickHouseStore>,
    metrics: Arc<Metrics>,
    sink_dir: std::path::PathBuf,
}

async fn setup(test: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Arc::clone(&metrics.log)).unwrap());
    let store = Arc::new(ClickHouseStore::new(&fresh_config(test)).unwrap());
    store.init().await.unwrap();
    let sink_dir = dir.path().join("clickhouse");
    Setup { _dir: dir, log, store, metrics, sink_dir }
}

fn sink(s: &Setup) -> ClickHouseSink {
    ClickHouseSink::new(Arc::clone(&s.log), Arc::clone(&s.store), config(), Arc::clone(&s.metrics), s.sink_dir.clone())
}

#[tokio::test]
async fn every_point_lands_once_on_the_shard_its_route_picks() {
    let s = setup("placement").await;
    let (stop, stopped) = watch::channel(false);
    let tasks = sink(&s)
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    for i in 0..10 {
        s.log.append(batch(i * 1000, 1000, 50).encode()).await.unwrap();
    }
    wait_for(s.store.as_ref(), 10_000).await;
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    let store = s.store.as_ref();
    assert_eq!(count(store, "SELECT count() FROM points").await, 10_000);
    assert_eq!(count(store, "SELECT uniqExact(value_int) FROM points").await, 10_000);
    for shard in 0..2 {
        let local = s
            .store
            .query_shard(
                shard,
                "SELECT count(), countIf(route % 2 != {shard}) FROM points_local"
                    .replace("{shard}", &shard.to_string())
                    .as_str(),
            )
            .await
            .unwrap();
        let b = &local.batches[0];
        let (rows, misplaced) =
            (b.column(0).as_primitive::<UInt64Type>().value(0), b.column(1).as_primitive::<UInt64Type>().value(0));
        assert!(rows > 0, "shard {shard} got nothing");
        assert_eq!(misplaced, 0, "shard {shard} holds rows of the other shard");
    }
    // Each series lives on exactly one shard.
    assert_eq!(
        count(
            store,
            "SELECT count() FROM (SELECT series_id FROM points GROUP BY series_id HAVING uniqExact(route % 2) > 1)"
        )
        .await,
        0
    );
    assert_eq!(s.log.cursor_position(CursorName::Store), s.log.end());
    assert_eq!(s.metrics.store_points.get(), 10_000);
}

#[tokio::test]
async fn a_block_pending_at_a_crash_is_inserted_again_without_duplicates() {
    let s = setup("pending").await;
    let first = s.log.append(batch(0, 500, 10).encode()).await.unwrap();
    s.log.append(batch(500, 500, 10).encode()).await.unwrap();
    // A crash after the first record's blocks reached the shards but before the positions were saved.
    for shard in 0..2 {
        let mut b = BlockBuilder::default();
        for p in &batch(0, 500, 10).points {
            let (route, target) = s.store.place(p);
            if target == shard {
                b.push(p, route);
            }
        }
        s.store.insert(shard, &b.finish()).await.unwrap();
        let mut file = super::progress::ProgressFile::open(&s.sink_dir, shard, 2, 0).unwrap();
        file.begin(0, first.next).unwrap();
    }
    wait_for(s.store.as_ref(), 500).await;

    let (stop, stopped) = watch::channel(false);
    let tasks = sink(&s)
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    wait_for(s.store.as_ref(), 1000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    sync_replicas(s.store.as_ref()).await;
    assert_eq!(count(s.store.as_ref(), "SELECT count() FROM points").await, 1000);
    assert_eq!(count(s.store.as_ref(), "SELECT uniqExact(value_int) FROM points").await, 1000);
}

#[tokio::test]
async fn queries_go_through_the_distributed_tables_and_bad_sql_is_the_callers_fault() {
    let s = setup("query").await;
    let e = s.store.query("SELEC nonsense").await.unwrap_err();
    assert_eq!(e.http_status(), 400, "{e}");
    let e = s.store.query("INSERT INTO points (route) VALUES (1)").await.unwrap_err();
    assert_eq!(e.http_status(), 400, "writes are refused: {e}");
    assert_eq!(count(s.store.as_ref(), "SELECT count() FROM rollups").await, 0);
}
