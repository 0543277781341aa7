//! Write endpoints: line protocol (InfluxDB 1.x and 2.x) and Prometheus remote_write.

use std::collections::HashSet;
use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::instrument;
use yaffle_core::line_protocol::{Line, Parser, Precision, SeriesCache};
use yaffle_core::{Batch, Point, remote_write};

use super::{AppState, Dialect, auth, count, error_response, status_of};
use crate::config::LimitsConfig;
use crate::metrics::{EndpointLabels, RejectLabels};
use yaffle_log::{LogError, now_ns};

/// Bodies larger than this are parsed on the blocking pool, off the async workers.
const INLINE_PARSE_BYTES: usize = 256 << 10;

/// `rp` is accepted and ignored like any unknown parameter: retention is configured per table.
#[derive(Debug, Deserialize)]
pub(super) struct V1Params {
    db: Option<String>,
    precision: Option<String>,
    p: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct V2Params {
    bucket: Option<String>,
    precision: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RemoteWriteParams {
    db: Option<String>,
}

#[instrument(skip_all, fields(db = tracing::field::Empty, points = tracing::field::Empty))]
pub(super) async fn influx_v1(
    State(s): State<AppState>,
    Query(q): Query<V1Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let db = q.db.filter(|d| !d.is_empty()).unwrap_or_else(|| s.http.default_database.clone());
    let r = line_protocol(&s, Dialect::V1, "write", db, q.precision, q.p.as_deref(), &headers, body).await;
    count(&s, "write", &r);
    r
}

#[instrument(skip_all, fields(db = tracing::field::Empty, points = tracing::field::Empty))]
pub(super) async fn influx_v2(
    State(s): State<AppState>,
    Query(q): Query<V2Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let db = q.bucket.filter(|d| !d.is_empty()).unwrap_or_else(|| s.http.default_database.clone());
    let r = line_protocol(&s, Dialect::V2, "api_v2_write", db, q.precision, None, &headers, body).await;
    count(&s, "api_v2_write", &r);
    r
}

#[allow(clippy::too_many_arguments)]
async fn line_protocol(
    s: &AppState,
    dialect: Dialect,
    endpoint: &'static str,
    db: String,
    precision: Option<String>,
    password: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    tracing::Span::current().record("db", db.as_str());
    if !auth::authorized(&s.auth, headers, password) {
        return error_response(dialect, StatusCode::UNAUTHORIZED, "authorization failed");
    }
    let precision = match Precision::parse(precision.as_deref().unwrap_or("")) {
        Some(p) => p,
        None => {
            let msg = format!("invalid precision {:?}: use n, ns, u, us, ms, s, m or h", precision.unwrap_or_default());
            return error_response(dialect, StatusCode::BAD_REQUEST, &msg);
        }
    };
    let raw = match read_body(s, endpoint, headers, body).await {
        Ok(b) => b,
        Err((status, msg)) => return error_response(dialect, status, &msg),
    };
    let body = match decompress(headers, raw, &s.limits) {
        Ok(b) => b,
        Err((status, msg)) => return error_response(dialect, status, &msg),
    };
    let limits = s.limits.as_ref().clone();
    let now = now_ns();
    let parsed = if body.len() > INLINE_PARSE_BYTES {
        tokio::task::spawn_blocking(move || parse(&body, &db, precision, now, &limits))
            .await
            .expect("parse task panicked")
    } else {
        parse(&body, &db, precision, now, &limits)
    };
    let (points, errors) = match parsed {
        Ok(p) => p,
        Err(msg) => {
            s.metrics.rejected_points.get_or_create(&RejectLabels { endpoint, reason: "too_many_points" }).inc();
            return error_response(dialect, StatusCode::PAYLOAD_TOO_LARGE, &msg);
        }
    };
    if !errors.is_empty() {
        s.metrics
            .rejected_points
            .get_or_create(&RejectLabels { endpoint, reason: "parse" })
            .inc_by(errors.len() as u64);
    }
    store_points(s, dialect, endpoint, points, errors).await
}

/// Checks field types, appends what is valid, and answers: 204, or 400 with InfluxDB's partial-write
/// message when some points were rejected (the valid ones are kept), or 503 when the log refuses.
async fn store_points(
    s: &AppState,
    dialect: Dialect,
    endpoint: &'static str,
    points: Vec<Point>,
    mut errors: Vec<String>,
) -> Response {
    let points = within_bounds(s, endpoint, points, &mut errors);
    let points = admit_series(s, endpoint, points, &mut errors);
    let conflicts = match s.field_types.check(&points, s.limits.max_new_measurements_per_request).await {
        Ok(c) => c,
        Err(e) => return error_response(dialect, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut kept = Vec::with_capacity(points.len());
    for (p, conflict) in points.into_iter().zip(conflicts) {
        match conflict {
            None => kept.push(p),
            Some(c) => {
                s.metrics.rejected_points.get_or_create(&RejectLabels { endpoint, reason: c.reason() }).inc();
                errors.push(c.to_string());
            }
        }
    }
    tracing::Span::current().record("points", kept.len());
    if !kept.is_empty() {
        let n = kept.len() as u64;
        if let Err(e) = s.log.append(Batch::new(kept).encode()).await {
            tracing::warn!(error = %e, "write refused by the log");
            let reason = match e {
                LogError::RecordTooLarge { .. } => "too_large",
                LogError::Backpressure { .. } => "backpressure",
                _ => "log",
            };
            s.metrics.rejected_points.get_or_create(&RejectLabels { endpoint, reason }).inc_by(n);
            return error_response(dialect, status_of(&e), &e.to_string());
        }
        s.metrics.points.get_or_create(&EndpointLabels { endpoint }).inc_by(n);
    }
    if errors.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // The first errors name what is wrong; thousands more would only make the answer huge.
        const LISTED: usize = 100;
        let mut listed = errors[..errors.len().min(LISTED)].join("\n");
        if errors.len() > LISTED {
            listed.push_str(&format!("\n(and {} more)", errors.len() - LISTED));
        }
        let msg = format!("partial write: {listed} dropped={}", errors.len());
        error_response(dialect, StatusCode::BAD_REQUEST, &msg)
    }
}

/// Keeps the points within `limits.max_future` ahead of the clock, `limits.max_age` behind it and on
/// the request's first `limits.max_days_per_request` days; each other one becomes an error of its own.
fn within_bounds(s: &AppState, endpoint: &'static str, mut points: Vec<Point>, errors: &mut Vec<String>) -> Vec<Point> {
    const DAY_NS: i64 = 86_400_000_000_000;
    let l = &s.limits;
    let now = now_ns();
    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let newest = now.saturating_add(nanos(l.max_future));
    let oldest = if l.max_age.is_zero() { i64::MIN } else { now.saturating_sub(nanos(l.max_age)) };
    // Points of one request mostly fall on one day: the last one admitted is checked first.
    let (mut days, mut last_day) = (HashSet::new(), None);
    let before = points.len();
    points.retain(|p| {
        let day = p.timestamp.div_euclid(DAY_NS);
        let bound = |limit, d, side| {
            let d = humantime::format_duration(d);
            format!("is more than limits.{limit} ({d}) {side} the server clock")
        };
        let why = if p.timestamp > newest {
            bound("max_future", l.max_future, "ahead of")
        } else if p.timestamp < oldest {
            bound("max_age", l.max_age, "behind")
        } else if last_day == Some(day) {
            return true;
        } else if days.len() < l.max_days_per_request || days.contains(&day) {
            last_day = Some(day);
            days.insert(day);
            return true;
        } else {
            format!("falls on a day past limits.max_days_per_request ({}) in this request", l.max_days_per_request)
        };
        errors.push(format!("point of series {} at {} ns {why}", p.series, p.timestamp));
        false
    });
    let refused = before - points.len();
    if refused > 0 {
        s.metrics.rejected_points.get_or_create(&RejectLabels { endpoint, reason: "bounds" }).inc_by(refused as u64);
    }
    points
}

/// Keeps the points the active-series limits admit; each other one becomes an error of its own.
fn admit_series(s: &AppState, endpoint: &'static str, points: Vec<Point>, errors: &mut Vec<String>) -> Vec<Point> {
    let mut refused = Vec::new();
    let kept = s.series.admit(points, &mut refused);
    s.metrics.active_series.set(s.series.active() as i64);
    if !refused.is_empty() {
        let n = refused.len() as u64;
        s.metrics.rejected_points.get_or_create(&RejectLabels { endpoint, reason: "series_limit" }).inc_by(n);
        errors.extend(refused.iter().map(ToString::to_string));
    }
    kept
}

/// Parses a body into points and per-line errors; fails only when the request has too many points.
fn parse(
    body: &[u8],
    db: &str,
    precision: Precision,
    now: i64,
    limits: &LimitsConfig,
) -> Result<(Vec<Point>, Vec<String>), String> {
    let mut parser = Parser::new(body, precision).with_max_line_bytes(limits.max_line_bytes.as_u64() as usize);
    let mut line = Line::default();
    let mut series = SeriesCache::with_limits(db, limits.series_limits());
    let mut points = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = parser.next_into(&mut line) {
        match r {
            Ok(()) => match line.to_point_cached(&mut series, now) {
                Ok(p) => {
                    if points.len() == limits.max_points_per_request {
                        return Err(format!(
                            "request has more than limits.max_points_per_request ({}) points",
                            limits.max_points_per_request
                        ));
                    }
                    points.push(p);
                }
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok((points, errors))
}

#[instrument(skip_all, fields(db = tracing::field::Empty, points = tracing::field::Empty))]
pub(super) async fn remote_write(
    State(s): State<AppState>,
    Query(q): Query<RemoteWriteParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = remote_write_inner(&s, q, &headers, body).await;
    count(&s, "api_v1_write", &r);
    r
}

async fn remote_write_inner(s: &AppState, q: RemoteWriteParams, headers: &HeaderMap, body: Body) -> Response {
    const ENDPOINT: &str = "api_v1_write";
    let db = q.db.filter(|d| !d.is_empty()).unwrap_or_else(|| s.http.remote_write_database.clone());
    tracing::Span::current().record("db", db.as_str());
    if !auth::authorized(&s.auth, headers, None) {
        return error_response(Dialect::V1, StatusCode::UNAUTHORIZED, "authorization failed");
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let decoded = match remote_write::check_content_type(content_type) {
        Ok(()) => {
            let body = match read_body(s, ENDPOINT, headers, body).await {
                Ok(b) => b,
                Err((status, msg)) => return error_response(Dialect::V1, status, &msg),
            };
            let limits = s.limits.remote_write_limits();
            // By what it decompresses to: 3 MB of snappy can be 64 MiB of protobuf.
            if remote_write::decompressed_len(&body).unwrap_or(0) > INLINE_PARSE_BYTES {
                tokio::task::spawn_blocking(move || remote_write::decode(&body, &db, &limits))
                    .await
                    .expect("decode task panicked")
            } else {
                remote_write::decode(&body, &db, &limits)
            }
        }
        Err(e) => Err(e),
    };
    match decoded {
        Ok(points) => store_points(s, Dialect::V1, ENDPOINT, points, Vec::new()).await,
        Err(e) => {
            s.metrics.rejected_points.get_or_create(&RejectLabels { endpoint: ENDPOINT, reason: "decode" }).inc();
            error_response(Dialect::V1, status_of(&e), &format!("remote_write: {e}"))
        }
    }
}

/// Reads the body within `limits.max_body_bytes`.
async fn read_body(
    s: &AppState,
    endpoint: &'static str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, (StatusCode, String)> {
    let limit = s.limits.max_body_bytes.as_u64() as usize;
    let too_large = |size: String| {
        (StatusCode::PAYLOAD_TOO_LARGE, format!("request body{size} exceeds limits.max_body_bytes ({limit} bytes)"))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        return Err(too_large(format!(" of {n} bytes")));
    }
    let timeout = s.http.body_read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(read) => read.map_err(|_| too_large(String::new()))?,
        Err(_) => {
            let msg = format!("request body not received within http.body_read_timeout ({timeout:?})");
            return Err((StatusCode::REQUEST_TIMEOUT, msg));
        }
    };
    s.metrics.request_bytes.get_or_create(&EndpointLabels { endpoint }).inc_by(bytes.len() as u64);
    Ok(bytes)
}

/// Undoes `Content-Encoding: gzip` within `limits.max_decompressed_bytes`.
fn decompress(headers: &HeaderMap, body: Bytes, limits: &LimitsConfig) -> Result<Bytes, (StatusCode, String)> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(body),
        "gzip" | "x-gzip" => {
            let limit = limits.max_decompressed_bytes.as_u64();
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}")))?;
            if out.len() as u64 > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("decompressed body exceeds limits.max_decompressed_bytes ({limit} bytes)"),
                ));
            }
            Ok(Bytes::from(out))
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {other:?}: use gzip or none"),
        )),
    }
}
