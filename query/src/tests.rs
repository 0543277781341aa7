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
    let s = QueryState::new(Some(Arc::new(store)), config, "prometheus".into(), Arc::new(auth), &mut registry);
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
