use std::sync::Arc;
use yaffle_core::ErrorStatus;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use yaffle_core::{FieldValue, Point, SeriesKey};

use super::*;
use crate::OutputFormat;

const DAY: i64 = 86_400_000_000_000;

fn point(db: &str, host: &str, ts: i64, fields: Vec<(&str, FieldValue)>) -> Point {
    let key = SeriesKey::new(db, "cpu", vec![("host".into(), host.into())]);
    Point::new(Arc::new(key), fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), ts)
}

async fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, &EmbeddedConfig::default()).await.unwrap()
}

#[tokio::test]
async fn written_points_come_back_with_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let fields = vec![
        ("f", FieldValue::Float(1.5)),
        ("i", FieldValue::Integer(-3)),
        ("u", FieldValue::Unsigned(u64::MAX)),
        ("b", FieldValue::Boolean(true)),
        ("s", FieldValue::String("hi".into())),
    ];
    store.write_points(&[point("db", "a", 5, fields)], 10).await.unwrap();
    let r = store
        .query("SELECT field, value, value_int, value_uint, value_bool, value_str, tags['host'] AS host FROM points ORDER BY field")
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 5);
    let b = &r.batches[0];
    let fields: Vec<&str> = b.column(0).as_string::<i32>().iter().map(Option::unwrap).collect();
    assert_eq!(fields, ["b", "f", "i", "s", "u"]);
    assert_eq!(b.column(1).as_primitive::<Float64Type>().value(1), 1.5);
    assert!(b.column(1).is_null(0) && b.column(1).is_null(3));
    assert_eq!(b.column(2).as_primitive::<Int64Type>().value(2), -3);
    assert_eq!(b.column(3).as_primitive::<UInt64Type>().value(4), u64::MAX);
    assert!(b.column(4).as_boolean().value(0));
    assert_eq!(b.column(5).as_string::<i32>().value(3), "hi");
    assert_eq!(b.column(6).as_string::<i32>().value(0), "a");
    assert_eq!(store.committed_position().await.unwrap(), 10);
}

#[tokio::test]
async fn an_empty_store_answers_with_no_rows_and_renders_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let r = store.query("SELECT time, field FROM points").await.unwrap();
    assert_eq!(r.num_rows(), 0);
    assert_eq!(r.render(OutputFormat::Json).unwrap(), b"[]");
    assert_eq!(r.render(OutputFormat::Csv).unwrap(), b"time,field\n");
    assert!(String::from_utf8(r.render(OutputFormat::Table).unwrap()).unwrap().contains("| time | field |"));
}

#[tokio::test]
async fn replayed_positions_are_ignored_and_the_position_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let p = point("db", "a", 5, vec![("f", FieldValue::Float(1.0))]);
    store.write_points(std::slice::from_ref(&p), 7).await.unwrap();
    store.write_points(std::slice::from_ref(&p), 7).await.unwrap();
    store.write_points(std::slice::from_ref(&p), 3).await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(store.committed_position().await.unwrap(), 7);
    assert_eq!(store.query("SELECT * FROM points").await.unwrap().num_rows(), 1);
}

#[tokio::test]
async fn a_crash_before_the_commit_point_rolls_back_and_after_it_rolls_forward() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    {
        let store = open(dir.path()).await;
        store.write_points(&[point("db", "a", 5, vec![("f", FieldValue::Float(1.0))])], 1).await.unwrap();
    }
    // Simulate a crash after step 2 of a write at position 2: committed, file still temporary.
    let part = root.join("points").join(files::partition_name(0));
    let committed = part.join("part-00000000000000000001.parquet");
    let moved = part.join("part-00000000000000000002.parquet");
    std::fs::copy(&committed, moved.with_extension("parquet.tmp")).unwrap();
    let commit = serde_json::json!({"position": 2, "files": [moved.strip_prefix(&root).unwrap()]});
    std::fs::write(root.join("_commit.json"), commit.to_string()).unwrap();
    // And a crash before step 2 of a write at position 3: only a temporary file.
    let orphan = part.join("part-00000000000000000003.parquet.tmp");
    std::fs::copy(&committed, &orphan).unwrap();

    let store = open(dir.path()).await;
    assert!(moved.exists(), "committed file was renamed into place");
    assert!(!orphan.exists(), "uncommitted file was removed");
    assert_eq!(store.committed_position().await.unwrap(), 2);
    assert_eq!(store.query("SELECT * FROM points").await.unwrap().num_rows(), 2);
}

#[tokio::test]
async fn retention_drops_whole_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        retention: Retention { points: Some(Duration::from_secs(2 * 86_400)), rollups: None, ..Retention::default() },
        ..EmbeddedConfig::default()
    };
    let store = EmbeddedStore::open(dir.path(), &config).await.unwrap();
    let points: Vec<Point> =
        (0..5).map(|d| point("db", "a", d * DAY + 1, vec![("f", FieldValue::Float(d as f64))])).collect();
    store.write_points(&points, 1).await.unwrap();
    // Now is day 4.5: days 0, 1 end at or before day 2.5, day 2 ends at day 3 (kept).
    assert_eq!(store.enforce_retention(4 * DAY + DAY / 2).await.unwrap(), 2);
    let r = store.query("SELECT min(value) AS v FROM points").await.unwrap();
    assert_eq!(r.batches[0].column(0).as_primitive::<Float64Type>().value(0), 2.0);
}

#[tokio::test]
async fn databases_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = point("one", "h", 1, vec![("f", FieldValue::Float(1.0))]);
    let b = point("two", "h", 1, vec![("f", FieldValue::Float(2.0))]);
    assert_ne!(a.series_id, b.series_id);
    store.write_points(&[a, b], 1).await.unwrap();
    let r = store.query("SELECT count(DISTINCT series_id) AS n FROM points WHERE database = 'two'").await.unwrap();
    assert_eq!(r.batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test]
async fn writes_and_ddl_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for sql in ["CREATE TABLE x AS SELECT 1", "INSERT INTO points SELECT * FROM points", "SET a = 1", "SELEKT"] {
        let e = store.query(sql).await.unwrap_err();
        assert_eq!(e.http_status(), 400, "{sql}: {e}");
    }
}

#[tokio::test]
async fn files_written_after_a_query_are_seen_by_the_next_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let count = async || {
        let r = store.query("SELECT count(*) AS n FROM points").await.unwrap();
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    assert_eq!(count().await, 0);
    assert_eq!(store.query("SELECT * FROM points").await.unwrap().num_rows(), 0);
    store.write_points(&[point("db", "a", 1, vec![("f", FieldValue::Float(1.0))])], 1).await.unwrap();
    assert_eq!(store.query("SELECT * FROM points").await.unwrap().num_rows(), 1);
    assert_eq!(count().await, 1);
    store.write_points(&[point("db", "a", 2, vec![("f", FieldValue::Float(1.0))])], 2).await.unwrap();
    assert_eq!(count().await, 2);
}

fn rollup(host: &str, start_ns: i64, count: u64, version: u64) -> RollupRow {
    let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), host.into())]));
    RollupRow {
        series_id: key.id(),
        series: key,
        field: "usage".into(),
        resolution_s: 60,
        window_start_ns: start_ns,
        aggregate: yaffle_core::Aggregate {
            count,
            sum: count as f64,
            min: 1.0,
            max: 1.0,
            first: (start_ns, 1.0),
            last: (start_ns + 1, 1.0),
        },
        sketch: String::new(),
        version,
    }
}

#[tokio::test]
async fn a_rollup_written_again_shows_once_with_the_highest_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let minute = 60_000_000_000;
    store.write_rollups(&[rollup("a", 0, 3, 3), rollup("a", minute, 2, 2), rollup("b", 0, 1, 1)]).await.unwrap();
    // A replay writes the same rows again, and one key with more points (a later version).
    store.write_rollups(&[rollup("a", 0, 3, 3), rollup("a", minute, 4, 4)]).await.unwrap();
    let r = store
        .query("SELECT tags['host'], time, count, sum FROM rollups WHERE resolution_s = 60 ORDER BY 1, 2")
        .await
        .unwrap();
    let b = &r.batches[0];
    let counts: Vec<u64> = b.column(2).as_primitive::<UInt64Type>().values().to_vec();
    assert_eq!(counts, [3, 4, 1]);
    let reopened = open(dir.path()).await;
    assert_eq!(reopened.query("SELECT * FROM rollups").await.unwrap().num_rows(), 3);
}

#[tokio::test]
async fn sql_answers_quantiles_from_the_rollups_sketches_merged_over_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let minute = 60_000_000_000;
    let with_values = |host: &str, start: i64, values: std::ops::Range<u32>| {
        let mut sketch = sketches_ddsketch::DDSketch::new(crate::sketch::config(0.01, 2048));
        values.clone().for_each(|v| sketch.add(v as f64));
        RollupRow { sketch: crate::sketch::encode(&sketch), ..rollup(host, start, values.len() as u64, 1) }
    };
    // Host a: 1..=100 over two windows; host b: 101..=200 in one; a row without a sketch is skipped.
    store
        .write_rollups(&[
            with_values("a", 0, 1..51),
            with_values("a", minute, 51..101),
            with_values("b", 0, 101..201),
            rollup("c", 0, 5, 1),
        ])
        .await
        .unwrap();
    let q = |sql: &'static str| {
        let store = &store;
        async move {
            let r = store.query(sql).await.unwrap();
            let b = &r.batches[0];
            (0..b.num_rows()).map(|i| b.column(0).as_primitive::<Float64Type>().value(i)).collect::<Vec<f64>>()
        }
    };
    let near = |got: &[f64], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= w * 0.0101, "{got:?} against {want:?}");
        }
    };
    // Per host (merging host a's two windows), then over everything.
    near(
        &q("SELECT sketch_quantile(sketch, 0.5) FROM rollups WHERE tags['host'] < 'c' GROUP BY tags['host'] ORDER BY tags['host']").await,
        &[50.0, 150.0],
    );
    let all = q("SELECT sketch_quantile(sketch, 0.99) FROM rollups").await;
    near(&all, &[198.0]);
    near(&q("SELECT sketch_quantile(sketch, 1) FROM rollups WHERE tags['host'] = 'a'").await, &[100.0]);
    // No sketch among the rows: NULL.
    let r = store.query("SELECT sketch_quantile(sketch, 0.5) FROM rollups WHERE tags['host'] = 'c'").await.unwrap();
    assert!(r.batches[0].column(0).is_null(0));
    // Bad input names what is wrong.
    let e = store.query("SELECT sketch_quantile(sketch, 1.5) FROM rollups").await.unwrap_err().to_string();
    assert!(e.contains("sketch_quantile") && e.contains("1.5"), "{e}");
    let e = store.query("SELECT sketch_quantile('not base64!', 0.5)").await.unwrap_err().to_string();
    assert!(e.contains("sketch_quantile") && e.contains("base64") && e.contains("not base64!"), "{e}");
    let e = store.query("SELECT sketch_quantile('bm9uc2Vuc2U=', 0.5)").await.unwrap_err().to_string();
    assert!(e.contains("not a DDSketch encoding"), "{e}");
}

#[tokio::test]
async fn deleted_points_are_gone_and_appended_ones_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Two days of points, one per hour.
    let hour = DAY / 24;
    let points: Vec<Point> =
        (0..48).map(|h| point("db", "a", h * hour, vec![("v", FieldValue::Float(h as f64))])).collect();
    store.write_points(&points, 1).await.unwrap();
    let count = |sql: &'static str| {
        let store = &store;
        async move {
            let r = store.query(sql).await.unwrap();
            r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
        }
    };
    // Delete from 10:00 on day one up to (not including) 05:00 on day two: cuts both partitions.
    store.delete_points(10 * hour, 29 * hour, &[]).await.unwrap();
    assert_eq!(count("SELECT count(*) FROM points").await, 48 - 19);
    assert_eq!(count("SELECT count(*) FROM points WHERE value >= 10 AND value < 29").await, 0);
    let written = store.append_points(&points[10..29], &[]).await.unwrap();
    assert_eq!(written, 19);
    assert_eq!(count("SELECT count(*) FROM points").await, 48);
    assert_eq!(count("SELECT count(DISTINCT value) FROM points").await, 48);
    // Deleting a whole day removes its partition.
    store.delete_points(0, DAY, &[]).await.unwrap();
    assert_eq!(count("SELECT count(*) FROM points").await, 24);
}

#[tokio::test]
async fn a_store_written_before_rollups_existed_still_answers_read_only() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).await.write_points(&[point("db", "a", 5, vec![("v", FieldValue::Float(1.0))])], 1).await.unwrap();
    std::fs::remove_dir(dir.path().join(EmbeddedConfig::default().dir).join(ROLLUPS_TABLE)).unwrap(); // as an older version left it
    let store = EmbeddedStore::open_read_only(dir.path(), &EmbeddedConfig::default()).await.unwrap();
    assert_eq!(store.query("SELECT * FROM points").await.unwrap().num_rows(), 1);
    let e = store.query("SELECT * FROM rollups").await.unwrap_err();
    assert!(e.to_string().contains("rollups"), "{e}");
}

/// A runaway query is cut by each bound with an error naming it, on its own runtime: writes go on
/// while it runs, and a query whose caller went away stops.
#[tokio::test]
async fn queries_are_bounded_by_rows_memory_and_time_and_writes_go_on_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        query: QueryLimits {
            timeout: Duration::from_secs(2),
            max_memory: bytesize::ByteSize::mib(8),
            max_result_rows: 100,
        },
        ..EmbeddedConfig::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), &config).await.unwrap());
    let points: Vec<Point> =
        (0..1000).map(|i| point("db", &format!("h{i}"), i, vec![("f", FieldValue::Float(1.0))])).collect();
    store.write_points(&points, 1).await.unwrap();

    let e = store.query("SELECT * FROM points").await.unwrap_err();
    assert!(e.to_string().contains("store.embedded.query.max_result_rows (100)"), "{e}");
    assert_eq!(e.http_status(), 422);
    assert_eq!(store.query("SELECT * FROM points LIMIT 100").await.unwrap().num_rows(), 100);

    let e = store
        .query("SELECT a.series_key, count(*) FROM points a, points b, points c GROUP BY a.series_key ORDER BY 2")
        .await;
    let e = e.unwrap_err().to_string();
    assert!(e.contains("store.embedded.query.max_memory") || e.contains("store.embedded.query.timeout"), "{e}");

    // A cross join of 10^12 rows runs until the timeout (10^9 can finish in two seconds with the
    // dependencies optimised); a write made meanwhile is committed before it ends.
    let cross =
        "SELECT count(*) FROM points a, points b, points c, points d WHERE a.value + b.value + c.value + d.value > 10";
    let running = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.query(cross).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.write_points(&points[..1], 2).await.unwrap();
    assert!(!running.is_finished(), "the query was still running when the write was done");
    let e = running.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("longer than store.embedded.query.timeout (2s)"), "{e}");

    // A caller that goes away cancels its query: the runtime is free for the next one at once.
    let abandoned = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.query(cross).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    abandoned.abort();
    assert_eq!(store.query("SELECT count(*) FROM points").await.unwrap().num_rows(), 1);
}

/// `select_series` reads only numeric samples of the chosen names, tags and span, each (series,
/// field) once, across partitions and files, in time order; a duplicate timestamp reads once.
#[tokio::test]
async fn series_selected_by_name_tags_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut position = 0;
    for (i, ts) in [3 * DAY + 5, 5, DAY + 5, 2 * DAY + 5, 2 * DAY + 5].into_iter().enumerate() {
        let fields = vec![("f", FieldValue::Float(i as f64)), ("s", FieldValue::String("x".into()))];
        position += 1;
        store
            .write_points(&[point("db", "a", ts, fields.clone()), point("db", "b", ts, fields)], position)
            .await
            .unwrap();
    }
    store.write_points(&[point("other", "a", 5, vec![("f", FieldValue::Float(9.0))])], position + 1).await.unwrap();
    let select = crate::SeriesSelect {
        database: "db".into(),
        names: Some(crate::name_candidates("cpu_f")),
        tags: vec![("host".into(), "a".into())],
        start_ns: 5,
        end_ns: 2 * DAY + 5,
        with_samples: true,
        max_samples: 100,
        resolution_s: None,
    };
    let got = store.select_series(&select).await.unwrap();
    assert_eq!(got.series.len(), 1, "{got:?}");
    let s = &got.series[0];
    assert_eq!((s.measurement.as_str(), s.field.as_str()), ("cpu", "f"));
    assert_eq!(s.tags, vec![("host".to_string(), "a".to_string())]);
    assert_eq!(s.samples, vec![(5, 1.0), (DAY + 5, 2.0), (2 * DAY + 5, 4.0)], "the later write of a time wins");
    let labels_only = store
        .select_series(&crate::SeriesSelect { with_samples: false, tags: vec![], ..select.clone() })
        .await
        .unwrap();
    assert_eq!(labels_only.series.len(), 2);
    assert!(labels_only.series.iter().all(|s| s.samples.is_empty()));
    let limited = store.select_series(&crate::SeriesSelect { max_samples: 2, ..select }).await;
    assert!(matches!(limited, Err(StoreError::QueryLimit(_))), "{limited:?}");
}
