//! The API over a real embedded store: shapes, database choice, auth, and every bound answered in
//! Prometheus' error shape and counted. The differential test against Prometheus is in the root
//! package's end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;
use yaffle_core::{FieldValue, Point, SeriesKey};
use yaffle_store::PositionedStore;
use yaffle_store::embedded::{EmbeddedConfig, EmbeddedStore};

use crate::{QueryConfig, QueryState, router};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * S;

async fn state(dir: &std::path::Path, config: QueryConfig, tokens: &[&str]) -> (QueryState, Registry) {
    let store = EmbeddedStore::open(dir, &EmbeddedConfig::default()).await.unwrap();
    let mut points = Vec::new();
    for host in ["a", "b"] {
        let key = Arc::new(SeriesKey::new("telegraf", "cpu", vec![("host".into(), host.into())]));
        for i in 0..60 {
            let fields =
                vec![("usage".into(), FieldValue::Float(i as f64)), ("note".into(), FieldValue::String("x".into()))];
            points.push(Point::new(Arc::clone(&key), fields, T0 + i * 10 * S));
        }
    }
    let up = Arc::new(SeriesKey::new("prometheus", "up", vec![("job".into(), "node".into())]));
    points.push(Point::new(up, vec![("value".into(), FieldValue::Float(1.0))], T0));
    store.write_points(&points, 1).await.unwrap();
    let mut registry = Registry::default();
    let auth =
        yaffle_core::auth::AuthConfig { tokens: tokens.iter().map(|t| t.to_string()).collect(), ..Default::default() };
    let resolutions = [Duration::from_secs(60), Duration::from_secs(300)];
    let s = QueryState::new(
        Some(Arc::new(store)),
        config,
        "prometheus".into(),
        Arc::new(auth),
        &resolutions,
        &mut registry,
    );
    (s, registry)
}

async fn get(s: &QueryState, uri: &str) -> (StatusCode, Value) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = router(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri}: {e}: {body:?}")))
}

fn metrics(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn fields_are_metrics_and_the_database_is_chosen_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = state(dir.path(), QueryConfig::default(), &[]).await;
    let t = (T0 + 300 * S) / S;
    let (status, body) = get(&s, &format!("/api/v1/query?query=cpu_usage&time={t}&db=telegraf")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{body}");
    assert_eq!(result[0]["metric"], serde_json::json!({"__name__": "cpu_usage", "host": "a"}));
    assert_eq!(result[0]["value"], serde_json::json!([t, "30"]));
    // `l=""` selects series without `l`; an equality on a tag is pushed down.
    let (_, absent) = get(&s, &format!("/api/v1/query?query=cpu_usage%7Brack%3D%22%22%7D&time={t}&db=telegraf")).await;
    assert_eq!(absent["data"]["result"].as_array().unwrap().len(), 2, "{absent}");
    let (_, one) = get(&s, &format!("/api/v1/query?query=cpu_usage%7Bhost%3D%22b%22%7D&time={t}&db=telegraf")).await;
    assert_eq!(one["data"]["result"][0]["metric"]["host"], "b", "{one}");
    // Strings are not samples; the default database is remote_write's.
    let (_, notes) = get(&s, &format!("/api/v1/query?query=cpu_note&time={t}&db=telegraf")).await;
    assert_eq!(notes["data"]["result"], serde_json::json!([]));
    let (_, up) = get(&s, &format!("/api/v1/query?query=up&time={}", T0 / S)).await;
    assert_eq!(up["data"]["result"][0]["metric"]["job"], "node", "{up}");
}

#[tokio::test]
async fn bounds_answer_in_prometheus_shape_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueryConfig { max_samples: 50, max_points_per_series: 100, ..QueryConfig::default() };
    let (s, registry) = state(dir.path(), config, &[]).await;
    let t = (T0 + 600 * S) / S;
    let (status, body) = get(&s, &format!("/api/v1/query?query=cpu_usage[10m]&time={t}&db=telegraf")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errorType"], "execution");
    assert!(body["error"].as_str().unwrap().contains("too many samples"), "{body}");
    let (status, body) = get(&s, &format!("/api/v1/query_range?query=1&start=0&end={t}&step=1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("exceeded maximum resolution of 100 points"), "{body}");
    // A query longer than its timeout: a subquery of a million steps.
    let (status, body) =
        get(&s, &format!("/api/v1/query?query=count_over_time(vector(1)[12d:1s])&time={t}&timeout=200ms")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["errorType"], "timeout");
    let text = metrics(&registry);
    for line in [
        r#"yaffle_query_requests_total{endpoint="query",status="execution"} 1"#,
        r#"yaffle_query_requests_total{endpoint="query_range",status="bad_data"} 1"#,
        r#"yaffle_query_requests_total{endpoint="query",status="timeout"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn queries_wait_for_a_turn_and_a_dropped_request_cancels_its_query() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueryConfig { max_concurrent: 1, ..QueryConfig::default() };
    let (s, registry) = state(dir.path(), config, &[]).await;
    let slow = format!("/api/v1/query?query=count_over_time(vector(1)[100d:1s])&time={}", T0 / S);
    // A slow query holds the only turn; a second one times out waiting for it.
    let first = tokio::spawn({
        let s = s.clone();
        let slow = slow.clone();
        async move { get(&s, &slow).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = get(&s, "/api/v1/query?query=1&timeout=300ms").await;
    assert_eq!((status, body["errorType"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("timeout")), "{body}");
    // The client of the slow one goes away: its turn is free at once and the evaluation stops.
    first.abort();
    let _ = first.await;
    let (status, body) = get(&s, "/api/v1/query?query=1%2B1&time=10").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], serde_json::json!([10, "2"]));
    assert!(metrics(&registry).contains("yaffle_query_inflight 0"), "{}", metrics(&registry));
}

#[tokio::test]
async fn tokens_are_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = state(dir.path(), QueryConfig::default(), &["secret"]).await;
    let (status, body) = get(&s, "/api/v1/query?query=1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"], "error");
    let req =
        Request::builder().uri("/api/v1/labels").header("Authorization", "Bearer secret").body(Body::empty()).unwrap();
    assert_eq!(router(s).oneshot(req).await.unwrap().status(), StatusCode::OK);
}

/// Raw points and their 1m and 5m rollups, as the downsampler writes them.
async fn store_with_rollups(dir: &std::path::Path) -> QueryState {
    let store = EmbeddedStore::open(dir, &EmbeddedConfig::default()).await.unwrap();
    let t0 = 1_699_999_800 * S; // a multiple of 5 minutes
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for (h, host) in ["a", "b"].iter().enumerate() {
        let key = Arc::new(SeriesKey::new("telegraf", "cpu", vec![("host".into(), host.to_string())]));
        // Every 10 s, 7 s past the window boundaries, for 2.5 hours; values rise and fall. The
        // downsampler has rolled up the first 2 hours.
        let samples: Vec<(i64, f64)> =
            (0..900).map(|i| (t0 + 7 * S + i * 10 * S, ((i * 37 + h as i64 * 11) % 101) as f64 * 0.25)).collect();
        for &(t, v) in &samples {
            points.push(Point::new(Arc::clone(&key), vec![("usage".into(), FieldValue::Float(v))], t));
        }
        for resolution_s in [60u32, 300] {
            let width = i64::from(resolution_s) * S;
            let mut windows: std::collections::BTreeMap<i64, Vec<(i64, f64)>> = Default::default();
            for &(t, v) in samples.iter().filter(|(t, _)| *t < t0 + 7200 * S) {
                windows.entry(t - t.rem_euclid(width)).or_default().push((t, v));
            }
            for (start, w) in windows {
                let values = w.iter().map(|s| s.1);
                rows.push(yaffle_store::RollupRow {
                    series: Arc::clone(&key),
                    series_id: key.id(),
                    field: "usage".into(),
                    resolution_s,
                    window_start_ns: start,
                    aggregate: yaffle_core::Aggregate {
                        count: w.len() as u64,
                        sum: values.clone().sum(),
                        min: values.clone().fold(f64::INFINITY, f64::min),
                        max: values.fold(f64::NEG_INFINITY, f64::max),
                        first: w[0],
                        last: w[w.len() - 1],
                    },
                    sketch: String::new(),
                    version: w.len() as u64,
                });
            }
        }
    }
    store.write_points(&points, 1).await.unwrap();
    yaffle_store::Store::write_rollups(&store, &rows).await.unwrap();
    let resolutions = [Duration::from_secs(60), Duration::from_secs(300)];
    let auth = Arc::new(yaffle_core::auth::AuthConfig::default());
    QueryState::new(
        Some(Arc::new(store)),
        QueryConfig::default(),
        "telegraf".into(),
        auth,
        &resolutions,
        &mut Registry::default(),
    )
}

async fn range_answer(
    s: &QueryState,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
    resolution: &str,
) -> (String, Value) {
    let uri = format!(
        "/api/v1/query_range?query={}&start={start}&end={end}&step={step}&resolution={resolution}",
        query.replace(' ', "%20").replace('[', "%5B").replace(']', "%5D").replace('(', "%28").replace(')', "%29")
    );
    let req = Request::builder().uri(&uri).body(Body::empty()).unwrap();
    let resp = router(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    let served = resp.headers()["x-yaffle-resolution"].to_str().unwrap().to_string();
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    (served, body["data"]["result"].clone())
}

fn assert_same(query: &str, raw: &Value, rolled: &Value) {
    let (r, o) = (raw.as_array().unwrap(), rolled.as_array().unwrap());
    assert_eq!(r.len(), o.len(), "{query}: series");
    assert!(!r.is_empty(), "{query}: no data");
    for (a, b) in r.iter().zip(o) {
        assert_eq!(a["metric"], b["metric"], "{query}");
        let (pa, pb) = (a["values"].as_array().unwrap(), b["values"].as_array().unwrap());
        assert_eq!(pa.len(), pb.len(), "{query}: points of {}", a["metric"]);
        for (x, y) in pa.iter().zip(pb) {
            let (vx, vy): (f64, f64) =
                (x[1].as_str().unwrap().parse().unwrap(), y[1].as_str().unwrap().parse().unwrap());
            assert_eq!(x[0], y[0], "{query}");
            assert!((vx - vy).abs() <= 1e-9 * vx.abs().max(vy.abs()), "{query} at {}: raw {vx}, rollups {vy}", x[0]);
        }
    }
}

/// With steps, start and ranges on window boundaries, rollups answer instant selectors and the
/// `*_over_time` functions their aggregates hold exactly as raw points do; `auto` picks the largest
/// resolution that fits and says so, and keeps `rate` on raw points.
#[tokio::test]
async fn rollups_answer_aligned_queries_as_raw_points_do() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_rollups(dir.path()).await;
    let (start, end) = (1_699_999_800 + 1800, 1_699_999_800 + 7200);
    // Past the rolled-up span, raw points answer the rest.
    let (served, rolled) = range_answer(&s, "max_over_time(cpu_usage[10m])", start, end + 1800, 300, "auto").await;
    assert_eq!(served, "5m,raw");
    assert_same(
        "hybrid",
        &range_answer(&s, "max_over_time(cpu_usage[10m])", start, end + 1800, 300, "raw").await.1,
        &rolled,
    );
    for query in [
        "cpu_usage",
        "max_over_time(cpu_usage[10m])",
        "min_over_time(cpu_usage[5m])",
        "sum_over_time(cpu_usage[15m])",
        "count_over_time(cpu_usage[10m])",
        "avg_over_time(cpu_usage[30m])",
        "last_over_time(cpu_usage[5m])",
        "sum by (host) (max_over_time(cpu_usage[10m])) / 2",
    ] {
        for (step, expected) in [(300, "5m"), (60, "1m")] {
            let (served_raw, raw) = range_answer(&s, query, start, end, step, "raw").await;
            assert_eq!(served_raw, "raw");
            let (served, rolled) = range_answer(&s, query, start, end, step, "auto").await;
            assert_eq!(served, expected, "{query} at step {step}");
            assert_same(query, &raw, &rolled);
        }
    }
    let (served, _) = range_answer(&s, "rate(cpu_usage[10m])", start, end, 300, "auto").await;
    assert_eq!(served, "raw", "rate needs every sample");
    // A range that is not a multiple of the resolution, or an unaligned start, stays raw.
    let (served, _) = range_answer(&s, "max_over_time(cpu_usage[7m])", start, end, 300, "auto").await;
    assert_eq!(served, "1m");
    let (served, _) = range_answer(&s, "cpu_usage", start + 30, end, 300, "auto").await;
    assert_eq!(served, "raw");
    // Forced onto rollups, an unaligned query is answered (approximately) and says so.
    let (served, _) = range_answer(&s, "cpu_usage", start + 30, end, 300, "5m").await;
    assert_eq!(served, "5m");
}
