use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytesize::ByteSize;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::sync::watch;
use tower::ServiceExt;
use yaffle_core::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use yaffle_store::PositionedStore;
use yaffle_store::embedded::{EmbeddedConfig, EmbeddedStore};

use super::*;
use crate::cardinality::SeriesLimiter;
use crate::sinks::store::{StoreSink, StoreSinkConfig};
use yaffle_log::LogConfig;
use yaffle_log::durable::{OsStorage, Storage};

struct Harness {
    state: AppState,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

async fn harness_with(limits: LimitsConfig, auth: AuthConfig) -> Harness {
    harness_on(limits, auth, &LogConfig::default(), Arc::new(OsStorage), real).await
}

/// The embedded store as it is.
fn real(store: EmbeddedStore) -> Arc<dyn PositionedStore> {
    Arc::new(store)
}

/// A harness whose log has `log_config` and makes its file-system calls through `storage`, and whose
/// store sink writes to `wrap` of the embedded store.
async fn harness_on(
    limits: LimitsConfig,
    auth: AuthConfig,
    log_config: &LogConfig,
    storage: Arc<dyn Storage>,
    wrap: fn(EmbeddedStore) -> Arc<dyn PositionedStore>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let log = Arc::new(Log::open_with(dir.path(), log_config, Arc::clone(&metrics.log), storage).unwrap());
    let store = wrap(EmbeddedStore::open(dir.path(), &EmbeddedConfig::default()).await.unwrap());
    let field_types = Arc::new(FieldTypes::open(&dir.path().join("fields.jsonl")).unwrap());
    let (stop, stopped) = watch::channel(false);
    let sink_config = StoreSinkConfig { flush_interval: Duration::from_millis(20), ..StoreSinkConfig::default() };
    let sinks = Supervisor::new(&mut registry);
    StoreSink::new(Arc::clone(&log), store.clone(), sink_config, Arc::clone(&metrics)).spawn(&sinks, stopped);
    let state = AppState {
        log,
        field_types,
        store: Some(store as Arc<dyn yaffle_store::Store>),
        metrics,
        registry: Arc::new(registry),
        http: Arc::new(HttpConfig::default()),
        series: Arc::new(SeriesLimiter::from_limits(&limits)),
        limits: Arc::new(limits),
        auth: Arc::new(auth),
        sinks,
    };
    Harness { state, _dir: dir, _stop: stop }
}

async fn harness() -> Harness {
    harness_with(LimitsConfig::default(), AuthConfig::default()).await
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(h: &Harness, req: Request<Body>) -> Reply {
    let resp = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, headers, body }
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).unwrap()
}

async fn sql(h: &Harness, q: &str) -> serde_json::Value {
    let uri = format!("/api/v1/sql?q={}", urlencode(q));
    let r = send(h, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_string()
}

/// Waits until the store has `n` rows for `q` (a SELECT of one count column named n).
/// Posts `body` to `uri`, expects InfluxDB's partial-write 400, and returns its message and the reply.
async fn partial_write(h: &Harness, uri: &str, body: impl Into<Body>) -> (String, Reply) {
    let r = send(h, post(uri, body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("partial write: "), "{error}");
    (error, r)
}

async fn wait_rows(h: &Harness, where_clause: &str, n: u64) {
    let q = format!("SELECT count(*) AS n FROM points WHERE {where_clause}");
    for _ in 0..250 {
        if sql(h, &q).await[0]["n"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{q}: {:?}, expected {n}", sql(h, &q).await);
}

#[tokio::test]
async fn v1_write_is_acknowledged_and_queryable() {
    let h = harness().await;
    let r = send(
        &h,
        post("/write?db=telegraf&precision=s", "cpu,host=a usage=1.5,n=2i 1700000000\nmem,host=a free=3u 1700000001"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    wait_rows(&h, "database = 'telegraf'", 3).await;
    let rows = sql(&h, "SELECT measurement, field, value, value_int, value_uint, tags['host'] AS host, CAST(time AS BIGINT) AS t FROM points ORDER BY field").await;
    assert_eq!(rows[0]["field"], "free");
    assert_eq!(rows[0]["value_uint"], 3);
    assert_eq!(rows[1]["value_int"], 2);
    assert_eq!(rows[2]["value"], 1.5);
    assert_eq!(rows[2]["host"], "a");
    assert_eq!(rows[2]["t"], 1_700_000_000_000_000_000i64);
}

#[tokio::test]
async fn partial_writes_keep_good_lines_and_report_bad_ones_like_influxdb() {
    let h = harness().await;
    let body = "m v=1 1\nm,bad v=1 2\nm v=3 3\nm v= 4\n";
    let (error, r) = partial_write(&h, "/write?db=db", body).await;
    assert!(
        error.starts_with("partial write: unable to parse 'm,bad v=1 2' (line 2, column 6): missing tag value"),
        "{error}"
    );
    assert!(error.contains("(line 4, column 5): missing field value"), "{error}");
    assert!(error.ends_with("dropped=2"), "{error}");
    assert!(r.headers["X-Influxdb-Error"].to_str().unwrap().starts_with("partial write:"));
    wait_rows(&h, "database = 'db'", 2).await;
}

#[tokio::test]
async fn field_type_conflicts_are_rejected_per_point() {
    let h = harness().await;
    assert_eq!(send(&h, post("/write?db=db", "m v=1 1")).await.status, StatusCode::NO_CONTENT);
    let r = send(&h, post("/api/v2/write?bucket=db&org=o", "m v=2i 2\nm v=3 3\nm,h=x v=\"s\" 4")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["code"], "invalid");
    assert_eq!(
        v["message"],
        "partial write: field type conflict: input field \"v\" on measurement \"m\" is type integer, already exists as type float\n\
         field type conflict: input field \"v\" on measurement \"m\" is type string, already exists as type float dropped=2"
    );
    wait_rows(&h, "database = 'db'", 2).await;
    // Another database has its own types.
    assert_eq!(send(&h, post("/write?db=other", "m v=2i 2")).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn gzip_bodies_and_the_v2_api() {
    let h = harness().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"m,t=1 v=1 1000").unwrap();
    let req = Request::post("/api/v2/write?org=o&bucket=b&precision=ms")
        .header("Content-Encoding", "gzip")
        .body(Body::from(gz.finish().unwrap()))
        .unwrap();
    assert_eq!(send(&h, req).await.status, StatusCode::NO_CONTENT);
    wait_rows(&h, "database = 'b' AND time = to_timestamp_nanos(1000000000)", 1).await;
}

#[tokio::test]
async fn limits_are_enforced_and_named() {
    let limits = LimitsConfig {
        max_body_bytes: ByteSize::b(100),
        max_decompressed_bytes: ByteSize::b(200),
        max_line_bytes: ByteSize::b(30),
        max_points_per_request: 2,
        max_labels_per_series: 1,
        max_label_value_bytes: 12,
        ..LimitsConfig::default()
    };
    let h = harness_with(limits, AuthConfig::default()).await;
    let r = send(&h, post("/write", "m v=1\n".repeat(20))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].as_str().unwrap().contains("limits.max_body_bytes (100 bytes)"));

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'#'; 10_000]).unwrap();
    let bomb =
        Request::post("/write").header("Content-Encoding", "gzip").body(Body::from(gz.finish().unwrap())).unwrap();
    let r = send(&h, bomb).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].as_str().unwrap().contains("limits.max_decompressed_bytes (200 bytes)"));

    let r = send(&h, post("/write", "m v=1\nm v=2\nm v=3")).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].as_str().unwrap().contains("limits.max_points_per_request (2)"));

    let r = send(&h, post("/write?db=lim", "m v=1 1\nmeasurement,tag=aaaaaaaaaaaaaaaaaaaaaa v=1 2")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("(line 2, column 31): line longer than limits.max_line_bytes (30 bytes)")
    );
    wait_rows(&h, "database = 'lim'", 1).await;

    // Series limits are per line: the good line is kept, the others are named.
    let body = "m,a=1 v=1 1\nm,a=1,b=2 v=1 2\nm,a=0123456789abc v=1 3";
    let (error, _) = partial_write(&h, "/write?db=series", body).await;
    assert!(error.contains("(line 2): more than limits.max_labels_per_series (1) tags"), "{error}");
    assert!(error.contains("tag value of 13 bytes is longer than limits.max_label_value_bytes (12 bytes)"), "{error}");
    assert!(error.ends_with("dropped=2"), "{error}");
    wait_rows(&h, "database = 'series'", 1).await;

    // remote_write counts labels while decoding; the whole request is refused.
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: ["__name__", "a", "b"]
                .iter()
                .map(|n| Label { name: n.to_string().into(), value: "v".into() })
                .collect(),
            samples: vec![Sample { value: 1.0, timestamp: 1 }],
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let r = send(&h, post("/api/v1/write?db=rw", body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["error"],
        "remote_write: series 0 has more than limits.max_labels_per_series (1) labels besides __name__"
    );
}

#[tokio::test]
async fn auth_refuses_writes_without_a_valid_token_and_stores_nothing() {
    let auth = AuthConfig { tokens: vec!["tok".into()], metrics: true };
    let h = harness_with(LimitsConfig::default(), auth).await;
    let r = send(&h, post("/write?db=a", "m v=1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &h,
        Request::post("/api/v2/write?bucket=a")
            .header("Authorization", "Token nope")
            .body(Body::from("m v=1"))
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.json()["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    assert_eq!(h.state.log.end(), 0, "nothing reached the log");
    assert_eq!(send(&h, post("/write?db=a&u=x&p=tok", "m v=1")).await.status, StatusCode::NO_CONTENT);
    let ok =
        Request::post("/api/v2/write?bucket=a").header("Authorization", "Token tok").body(Body::from("m v=1")).unwrap();
    assert_eq!(send(&h, ok).await.status, StatusCode::NO_CONTENT);
    // `auth.metrics`: the scrape needs the token too; health stays open for probes.
    let scrape = |token: Option<&str>| {
        let r = Request::get("/metrics");
        let r = match token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        };
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&h, scrape(None)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&h, scrape(Some("tok"))).await.status, StatusCode::OK);
    assert_eq!(send(&h, Request::get("/health").body(Body::empty()).unwrap()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn remote_write_keeps_names_and_labels_and_accepts_metadata_only_requests() {
    let h = harness().await;
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label { name: "__name__".into(), value: "http_requests_total".into() },
                Label { name: "job".into(), value: "api".into() },
            ],
            samples: vec![Sample { value: 4.0, timestamp: 1_700_000_000_123 }],
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let request = Request::post("/api/v1/write")
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&h, request).await.status, StatusCode::NO_CONTENT);
    let empty = snap::raw::Encoder::new().compress_vec(&[]).unwrap();
    assert_eq!(send(&h, post("/api/v1/write", empty)).await.status, StatusCode::NO_CONTENT);
    wait_rows(&h, "database = 'prometheus'", 1).await;
    let rows = sql(&h, "SELECT measurement, field, value, tags['job'] AS job, series_key FROM points").await;
    assert_eq!(rows[0]["measurement"], "http_requests_total");
    assert_eq!(rows[0]["job"], "api");
    assert_eq!(rows[0]["series_key"], "prometheus/http_requests_total,job=api");
    let r = send(&h, post("/api/v1/write", "garbage")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().starts_with("remote_write: snappy"));

    // A remote_write 2.0 sender is told its message type is not supported (the spec's 415), so it can
    // fall back to 1.0; nothing is stored.
    let v2 = Request::post("/api/v1/write?db=v2")
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(Body::from(snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()))
        .unwrap();
    let r = send(&h, v2).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.json()["error"].as_str().unwrap().contains("io.prometheus.write.v2.Request"));
}

#[tokio::test]
async fn ping_query_health_and_metrics() {
    let h = harness().await;
    let r = send(&h, Request::head("/ping").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers["X-Influxdb-Version"], INFLUXDB_COMPAT_VERSION);

    let r = send(&h, post("/query?q=CREATE%20DATABASE%20%22telegraf%22", "")).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, serde_json::json!({"results": [{"statement_id": 0}]})));
    let form = Request::post("/query")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Body::from("q=create+database+x"))
        .unwrap();
    assert_eq!(send(&h, form).await.status, StatusCode::OK);
    let r = send(&h, Request::get("/query?q=SELECT%20*%20FROM%20cpu").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    assert!(r.json()["error"].as_str().unwrap().contains("/api/v1/sql"));

    assert_eq!(send(&h, Request::get("/health").body(Body::empty()).unwrap()).await.json()["status"], "pass");
    send(&h, post("/write?db=m", "m v=1")).await;
    let r = send(&h, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(r.body.contains("yaffle_ingest_points_total{endpoint=\"write\"} 1"), "{}", r.body);
    assert!(r.body.contains("yaffle_ingest_requests_total{endpoint=\"write\",status=\"204\"} 1"), "{}", r.body);
}

#[tokio::test]
async fn sql_formats_and_errors() {
    let h = harness().await;
    send(&h, post("/write?db=f", "m v=1 1")).await;
    wait_rows(&h, "database = 'f'", 1).await;
    let csv = send(&h, post("/api/v1/sql?format=csv", "SELECT field, value FROM points")).await;
    assert_eq!((csv.status, csv.body.as_str()), (StatusCode::OK, "field,value\nv,1.0\n"));
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    let bad = send(&h, post("/api/v1/sql", "SELECT nope FROM points")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].as_str().unwrap().contains("nope"));
    let missing = send(&h, Request::get("/api/v1/sql").body(Body::empty()).unwrap()).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_request_larger_than_the_largest_log_record_gets_413_and_nothing_of_it_is_kept() {
    let log_config = LogConfig { max_record_bytes: ByteSize::kib(4), ..LogConfig::default() };
    let h = harness_on(LimitsConfig::default(), AuthConfig::default(), &log_config, Arc::new(OsStorage), real).await;
    let big: String = (0..400).map(|i| format!("cpu,host=h{i} usage={i} 1700000000\n")).collect();
    let r = send(&h, post("/write?db=big&precision=s", big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("exceeds log.max_record_bytes (4096 bytes)"), "{}", r.body);
    let r = send(&h, post("/write?db=big&precision=s", "cpu,host=small usage=1 1700000000")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    wait_rows(&h, "database = 'big'", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_rows(&h, "database = 'big'", 1).await;
}

/// The real file system, with fsync failing once `failing` is set.
#[derive(Debug, Default)]
struct FailingFsync {
    failing: std::sync::atomic::AtomicBool,
}

impl Storage for FailingFsync {
    fn sync_file(&self, file: &std::fs::File) -> std::io::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        file.sync_data()
    }
}

#[tokio::test]
async fn a_failed_fsync_answers_503_naming_it_and_health_fails_until_restart() {
    let storage = Arc::new(FailingFsync::default());
    let h =
        harness_on(LimitsConfig::default(), AuthConfig::default(), &LogConfig::default(), storage.clone(), real).await;
    let r = send(&h, post("/write?db=d", "m v=1 1")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    storage.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        let r = send(&h, post("/write?db=d", "m v=2 2")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("since an fsync failed"), "{}", r.body);
        storage.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    let health = send(&h, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "fail");
    assert!(health.json()["message"].as_str().unwrap().contains("Input/output error"), "{}", health.body);
    let metrics = send(&h, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(metrics.body.contains("yaffle_log_poisoned 1"), "{}", metrics.body);
    wait_rows(&h, "database = 'd'", 1).await;
}

#[tokio::test]
async fn a_sink_failing_fatally_makes_health_fail_naming_it_until_it_recovers() {
    // Two refused writes (a non-retryable store error), then the store takes them.
    let failing = |s| Arc::new(crate::sinks::store::tests::Flaky::new(s, 2, true)) as Arc<dyn PositionedStore>;
    let h =
        harness_on(LimitsConfig::default(), AuthConfig::default(), &LogConfig::default(), Arc::new(OsStorage), failing)
            .await;
    let write = Request::post("/write?db=db").body(Body::from("cpu value=1 1\ncpu value=2 2\n")).unwrap();
    assert_eq!(send(&h, write).await.status, StatusCode::NO_CONTENT);
    let mut failed = None;
    for _ in 0..200 {
        let health = send(&h, Request::get("/health").body(Body::empty()).unwrap()).await;
        if health.status == StatusCode::SERVICE_UNAVAILABLE {
            failed = Some(health);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = failed.expect("health turned unhealthy");
    assert_eq!(health.json()["status"], "fail");
    let message = health.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("store: store configuration: injected refusal"), "{message}");
    assert_eq!(health.json()["sinks"]["store"]["state"], "failed");
    let metrics = send(&h, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(metrics.body.contains("yaffle_sink_fatal_errors_total{sink=\"store\"} "), "{}", metrics.body);
    // It restarts with backoff, the store takes the points, and health passes again: nothing lost.
    let mut recovered = false;
    for _ in 0..500 {
        let health = send(&h, Request::get("/health").body(Body::empty()).unwrap()).await;
        if health.status == StatusCode::OK
            && h.state.log.cursor_position(yaffle_log::CursorName::Store) == h.state.log.end()
        {
            assert_eq!(health.json()["sinks"]["store"]["state"], "running");
            assert_eq!(health.json()["sinks"]["store"]["restarts"], 2);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "the store sink recovered");
    let rows = h.state.store.as_ref().unwrap().query("SELECT count(*) AS n FROM points").await.unwrap();
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(rows.batches[0].column(0)).value(0),
        2
    );
}

/// A point at the end of time (or past `limits.max_future`) is refused on its own; the request's
/// other points are kept.
#[tokio::test]
async fn points_too_far_ahead_are_refused_each_and_the_rest_kept() {
    let h = harness().await;
    let body =
        format!("m v=1 {}\nm v=2 1000000000\nm v=3 {}", i64::MAX, yaffle_log::now_ns() + 3 * 86_400 * 1_000_000_000);
    let (error, _) = partial_write(&h, "/write?db=future", body).await;
    assert!(
        error.contains("future/m at 9223372036854775807 ns is more than limits.max_future (2days) ahead"),
        "{error}"
    );
    assert!(error.ends_with("dropped=2"), "{error}");
    wait_rows(&h, "database = 'future'", 1).await;
}

/// A request spreading points over more days than `limits.max_days_per_request` (each a partition
/// of the stores) keeps those of its first days.
#[tokio::test]
async fn points_on_too_many_days_are_refused_past_the_limit() {
    let limits = LimitsConfig { max_days_per_request: 3, ..LimitsConfig::default() };
    let h = harness_with(limits, AuthConfig::default()).await;
    let day = 86_400_000_000_000i64;
    let body: Vec<String> = (0..300).map(|d| format!("m v={d} {}", d * day)).collect();
    let (error, r) = partial_write(&h, "/write?db=days", body.join("\n") + "\nm v=9 1").await;
    assert!(error.contains("falls on a day past limits.max_days_per_request (3) in this request"), "{error}");
    // The first hundred errors are listed, the count is whole, and the header stays short.
    assert!(error.ends_with("\n(and 197 more) dropped=297"), "{error}");
    assert!(r.headers["x-influxdb-error"].len() <= 4096);
    wait_rows(&h, "database = 'days'", 4).await;
}
