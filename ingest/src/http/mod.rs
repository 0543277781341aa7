//! The HTTP API: InfluxDB-compatible writes, Prometheus remote_write, SQL, health and metrics.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /write` | InfluxDB 1.x line protocol: `db`, `rp` (accepted, ignored: retention is per table), `precision`, `u`/`p` |
//! | `POST /api/v2/write` | InfluxDB 2.x line protocol: `org` (ignored), `bucket`, `precision` |
//! | `POST /api/v1/write` | Prometheus remote_write 1.0 (snappy protobuf); `db` overrides the configured database |
//! | `GET,HEAD /ping` | 204 with `X-Influxdb-Version`, as InfluxDB answers |
//! | `GET,POST /query` | `CREATE DATABASE` succeeds (a no-op: databases exist when written to); other InfluxQL gets 501 |
//! | `GET,POST /api/v1/sql` | SQL over the store: `q` (or the POST body), `format=json|csv|table`; 501 without a store |
//! | `GET /health` | 200 with a JSON status and each sink's state; 503 naming the cause once the log refuses writes (a failed fsync) or a sink failed fatally (until it recovers) |
//! | `GET /metrics` | Prometheus text format (behind the token when `auth.metrics` is set) |
//!
//! Writes answer 204 only after the batch is in the durable log. Bad lines are reported as InfluxDB
//! does (400, `partial write: ...` in the JSON body and in `X-Influxdb-Error`) while the good lines of the
//! same request are kept. `/api/v2/write` answers errors in InfluxDB 2.x's `{"code","message"}` shape.

mod auth;
mod query;
mod server;
#[cfg(test)]
mod tests;
mod write;

pub use server::serve_router;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use yaffle_core::ErrorStatus;
use yaffle_store::Store;

use crate::cardinality::SeriesLimiter;
use crate::config::{AuthConfig, HttpConfig, LimitsConfig};
use crate::metrics::{Metrics, RequestLabels};
use crate::schema::FieldTypes;
use yaffle_log::Log;
use yaffle_log::sink::Supervisor;

/// The InfluxDB version reported by `/ping`: the 1.x API level Yaffle implements, so clients that
/// check it choose the right protocol.
pub const INFLUXDB_COMPAT_VERSION: &str = "1.8.10";

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The durable log writes go to.
    pub log: Arc<Log>,
    /// Field types, for conflicts.
    pub field_types: Arc<FieldTypes>,
    /// The store SQL runs against.
    /// `None` in the ingest role without a queryable store: `/api/v1/sql` answers 501.
    pub store: Option<Arc<dyn Store>>,
    /// Ingest metrics.
    pub metrics: Arc<Metrics>,
    /// The registry `/metrics` renders.
    pub registry: Arc<Registry>,
    /// Listener and default databases.
    pub http: Arc<HttpConfig>,
    /// Request limits.
    pub limits: Arc<LimitsConfig>,
    /// Tokens.
    pub auth: Arc<AuthConfig>,
    /// The sinks' runtime, for their health.
    pub sinks: Arc<Supervisor>,
    /// The active-series limits.
    pub series: Arc<SeriesLimiter>,
}

/// The router, without a socket (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/write", post(write::influx_v1))
        .route("/api/v2/write", post(write::influx_v2))
        .route("/api/v1/write", post(write::remote_write))
        .route("/ping", get(ping).head(ping))
        .route("/query", get(query::influxql).post(query::influxql))
        .route("/api/v1/sql", get(query::sql).post(query::sql))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, under `http`'s connection bounds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = Arc::clone(&state.http);
    serve_router(listener, app(state), &http, shutdown).await
}

async fn ping() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("X-Influxdb-Version", INFLUXDB_COMPAT_VERSION),
            ("X-Influxdb-Build", "OSS"),
            ("X-Yaffle-Version", env!("CARGO_PKG_VERSION")),
        ],
    )
        .into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    let failed = s.sinks.failures();
    let (status, state, message) = match s.log.health() {
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "fail", e.to_string()),
        Ok(()) if !failed.is_empty() => {
            (StatusCode::SERVICE_UNAVAILABLE, "fail", format!("sink failed, restarting: {}", failed.join("; ")))
        }
        Ok(()) => (StatusCode::OK, "pass", "ready for queries and writes".to_string()),
    };
    let body = serde_json::json!({
        "name": "yaffle",
        "status": state,
        "message": message,
        "version": env!("CARGO_PKG_VERSION"),
        "log_end": s.log.end(),
        "sinks": s.sinks.statuses(),
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if s.auth.metrics_protected() && !auth::authorized(&s.auth, &headers, None) {
        return error_response(Dialect::V1, StatusCode::UNAUTHORIZED, "authorization failed");
    }
    render_metrics(&s.registry)
}

/// A `/metrics` response: the registry in the OpenMetrics text format.
pub fn render_metrics(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The error body shape of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `{"error": "..."}` (InfluxDB 1.x, and Yaffle's own endpoints).
    V1,
    /// `{"code": "...", "message": "..."}` (InfluxDB 2.x).
    V2,
}

/// An error answer in the endpoint's dialect, with the message also in `X-Influxdb-Error`.
fn error_response(dialect: Dialect, status: StatusCode, message: &str) -> Response {
    let body = match dialect {
        Dialect::V1 => serde_json::json!({ "error": message }),
        Dialect::V2 => serde_json::json!({ "code": v2_code(status), "message": message }),
    };
    let mut response = (status, axum::Json(body)).into_response();
    // Clients refuse long header lines (Python's at 64 KiB): the header carries the start, the body all.
    let header_text: String =
        message.chars().take(4096).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).collect();
    if let Ok(v) = HeaderValue::from_str(&header_text) {
        response.headers_mut().insert("X-Influxdb-Error", v);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The status an error is answered with.
fn status_of(e: &impl ErrorStatus) -> StatusCode {
    StatusCode::from_u16(e.http_status()).expect("a valid status")
}

fn v2_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::PAYLOAD_TOO_LARGE => "request too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => "unavailable",
        StatusCode::NOT_IMPLEMENTED => "not implemented",
        _ => "internal error",
    }
}

fn count(state: &AppState, endpoint: &'static str, response: &Response) {
    state.metrics.requests.get_or_create(&RequestLabels { endpoint, status: response.status().as_u16() }).inc();
}
