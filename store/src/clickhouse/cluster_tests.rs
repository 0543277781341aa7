//! Rollups, deletes and rebuilt points on the real 2x2 cluster (`scripts/clickhouse-cluster`).

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use yaffle_core::{FieldValue, Point, SeriesKey};

use super::testing::{fresh_config, sync_replicas};
use super::*;

const T0: i64 = 1_700_000_000_000_000_000;

async fn store(test: &str) -> ClickHouseStore {
    let store = ClickHouseStore::new(&fresh_config(test)).unwrap();
    store.init().await.unwrap();
    store
}

/// Reads after every replica has fetched what its peer was given.
async fn numbers(store: &ClickHouseStore, sql: &str) -> Vec<u64> {
    sync_replicas(store).await;
    let r = store.query(sql).await.unwrap();
    r.batches.iter().flat_map(|b| b.column(0).as_primitive::<UInt64Type>().values().to_vec()).collect()
}

fn key(host: usize) -> Arc<SeriesKey> {
    Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), format!("h{host}"))]))
}

fn rollup(host: usize, count: u64) -> RollupRow {
    let series = key(host);
    RollupRow {
        series_id: series.id(),
        series,
        field: "v".into(),
        resolution_s: 60,
        window_start_ns: T0 - T0 % 60_000_000_000,
        aggregate: yaffle_core::Aggregate {
            count,
            sum: count as f64,
            min: 0.0,
            max: 1.0,
            first: (T0, 0.0),
            last: (T0 + 1, 1.0),
        },
        sketch: String::new(),
        version: count,
    }
}

#[tokio::test]
async fn rollups_written_twice_read_once_with_final() {
    let store = store("rollups").await;
    let rows: Vec<RollupRow> = (0..20).map(|h| rollup(h, 5)).collect();
    store.write_rollups(&rows).await.unwrap();
    store.write_rollups(&rows).await.unwrap(); // a replay
    store.write_rollups(&[rollup(0, 7)]).await.unwrap(); // a window rebuilt from more of the log
    // Old servers (18.x) need the sort key and the version among the columns a FINAL query reads.
    let counts = numbers(
        &store,
        "SELECT count, database, measurement, series_id, field, resolution_s, window_start_ns, version \
         FROM rollups FINAL ORDER BY series_key",
    )
    .await;
    assert_eq!(counts.len(), 20, "one row per key");
    assert_eq!(counts[0], 7);
    assert!(counts[1..].iter().all(|&c| c == 5));
    // Each series' rows sit on the shard its route picks, as its points do.
    let on_shard_1 = store.query_shard(0, "SELECT count() FROM rollups_local WHERE route % 2 != 0").await.unwrap();
    assert_eq!(on_shard_1.batches[0].column(0).as_primitive::<UInt64Type>().value(0), 0);
}

#[tokio::test]
async fn deleted_points_rebuilt_from_elsewhere_are_exact_even_twice() {
    let store = store("rebuild").await;
    let points: Vec<Point> = (0..1000)
        .map(|i| Point::new(key(i % 10), vec![("v".into(), FieldValue::Float(i as f64))], T0 + i as i64))
        .collect();
    assert_eq!(store.append_points(&points, &[]).await.unwrap(), 1000);
    store.delete_points(T0 + 100, T0 + 600, &[]).await.unwrap();
    assert_eq!(numbers(&store, "SELECT count() FROM points").await, [500]);
    for _ in 0..2 {
        // A rebuild deletes its range, then writes it again: run twice, the counts stay exact.
        store.delete_points(T0 + 100, T0 + 600, &[]).await.unwrap();
        assert_eq!(store.append_points(&points[100..600], &[]).await.unwrap(), 500);
        assert_eq!(numbers(&store, "SELECT count() FROM points").await, [1000]);
        assert_eq!(numbers(&store, "SELECT uniqExact(value) FROM points").await, [1000]);
    }
    // Only the chosen shard is rebuilt.
    store.delete_points(T0, T0 + 1000, &[1]).await.unwrap();
    let kept = numbers(&store, "SELECT count() FROM points").await[0];
    let written = store.append_points(&points, &[1]).await.unwrap();
    assert_eq!(kept + written, 1000);
    assert_eq!(numbers(&store, "SELECT count() FROM points").await, [1000]);
}

/// User queries run read-only under `store.clickhouse.query`: no SET, no table functions (a
/// server-side request vector), and answers past the row limit are refused by ClickHouse itself.
#[tokio::test]
async fn user_queries_are_read_only_and_bounded() {
    let mut config = fresh_config("limits");
    config.query.max_result_rows = 10;
    let store = ClickHouseStore::new(&config).unwrap();
    store.init().await.unwrap();
    let refused = |r: Result<QueryResult, StoreError>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let e = refused(store.query("SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')").await);
    assert!(e.contains("readonly"), "{e}");
    let e = refused(store.query("SET max_threads = 1").await);
    assert!(e.contains("readonly"), "{e}");
    let e = store.query("SELECT number FROM system.numbers LIMIT 50").await.unwrap_err();
    assert!(matches!(e, StoreError::QueryLimit(_)), "{e}");
    assert_eq!(store.query("SELECT number FROM system.numbers LIMIT 10").await.unwrap().num_rows(), 10);
}

/// `select_series` reads what PromQL selectors need from both shards: names, tags and time pushed
/// down, each (series, field) once with its samples in time order.
#[tokio::test]
async fn series_selected_across_shards_with_names_tags_and_time() {
    let store = store("select").await;
    let points: Vec<Point> = (0..400)
        .map(|i| {
            let fields = vec![("v".into(), FieldValue::Float(i as f64)), ("w".into(), FieldValue::Integer(i))];
            Point::new(key(i as usize % 8), fields, T0 + i * 1_000_000_000)
        })
        .collect();
    store.append_points(&points, &[]).await.unwrap();
    sync_replicas(&store).await;
    let select = |names: Option<Vec<(String, String)>>, tags: Vec<(String, String)>| crate::SeriesSelect {
        database: "db".into(),
        names,
        tags,
        start_ns: T0 + 100_000_000_000,
        end_ns: T0 + 199_000_000_000,
        with_samples: true,
        max_samples: 10_000,
        resolution_s: None,
    };
    let all = store.select_series(&select(None, vec![])).await.unwrap();
    assert!(all.warnings.is_empty(), "{:?}", all.warnings);
    assert_eq!(all.series.len(), 16, "8 hosts x 2 fields");
    assert_eq!(all.series.iter().map(|s| s.samples.len()).sum::<usize>(), 200);
    let v = store
        .select_series(&select(Some(crate::name_candidates("cpu_v")), vec![("host".into(), "h3".into())]))
        .await
        .unwrap();
    assert_eq!(v.series.len(), 1);
    let s = &v.series[0];
    assert_eq!((s.measurement.as_str(), s.field.as_str()), ("cpu", "v"));
    assert_eq!(s.tags, vec![("host".to_string(), "h3".to_string())]);
    let expected: Vec<(i64, f64)> =
        (100..200).filter(|i| i % 8 == 3).map(|i| (T0 + i * 1_000_000_000, i as f64)).collect();
    assert_eq!(s.samples, expected);
    let too_many = store.select_series(&crate::SeriesSelect { max_samples: 10, ..select(None, vec![]) }).await;
    assert!(matches!(too_many, Err(StoreError::QueryLimit(_))), "{too_many:?}");
}
