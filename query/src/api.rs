//! The handlers and Prometheus' JSON shapes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use yaffle_promql::{
    Budget, EngineConfig, Error, Labels, Query, Selection, Series, Value, format_value, valid_label_name,
};

use crate::params::{MAX_TIME_NS, MIN_TIME_NS, Params, parse_duration};
use crate::source::{Resolution, StoreSource};
use crate::{EndpointLabels, QueryState};

/// The Prometheus version whose HTTP API and PromQL semantics Yaffle follows.
const PROMETHEUS_VERSION: &str = "2.42.0";

/// The routes of the Prometheus API, to merge into a server's router.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/api/v1/query", get(instant).post(instant))
        .route("/api/v1/query_range", get(range).post(range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(state)
}

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadData(_) => StatusCode::BAD_REQUEST,
        Error::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Timeout(_) | Error::Canceled(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json_response(status: StatusCode, body: String, warnings: &[String]) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(w) = warnings.first().and_then(|w| header::HeaderValue::from_str(w).ok()) {
        response.headers_mut().insert("x-yaffle-warning", w);
    }
    response
}

/// A query's answer, with the resolutions that served it.
fn answered(data: &str, source: &StoreSource) -> Response {
    let mut response = success(data, &source.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    let served: Vec<String> = source.served.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
    if let Ok(v) = header::HeaderValue::from_str(&served.join(",")) {
        response.headers_mut().insert("x-yaffle-resolution", v);
    }
    response
}

fn error_response(e: &Error) -> Response {
    let body = serde_json::json!({ "status": "error", "errorType": e.error_type(), "error": e.to_string() });
    json_response(status_of(e), body.to_string(), &[])
}

/// `{"status":"success","data":<data>}` with `warnings` when there are any.
fn success(data: &str, warnings: &[String]) -> Response {
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(data);
    if !warnings.is_empty() {
        body.push_str(r#","warnings":"#);
        body.push_str(&serde_json::to_string(warnings).unwrap_or_else(|_| "[]".into()));
    }
    body.push('}');
    json_response(StatusCode::OK, body, warnings)
}

/// A time in ns as Prometheus prints one: seconds with up to three decimals.
fn write_time(out: &mut String, t_ns: i64) {
    let ms = t_ns.div_euclid(1_000_000);
    let (sign, ms) = if ms < 0 { ("-", -ms) } else { ("", ms) };
    let _ = write!(out, "{sign}{}", ms / 1000);
    let frac = ms % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

fn write_point(out: &mut String, t_ns: i64, v: f64) {
    out.push('[');
    write_time(out, t_ns);
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    out.push('}');
}

fn write_matrix(out: &mut String, series: &[Series]) {
    out.push('[');
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        write_labels(out, &s.labels);
        out.push_str(r#","values":["#);
        for (j, &(t, v)) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_point(out, t, v);
        }
        out.push_str("]}");
    }
    out.push(']');
}

fn write_value(out: &mut String, value: &Value, t_ns: i64) {
    match value {
        Value::Scalar(v) => {
            out.push_str(r#"{"resultType":"scalar","result":"#);
            write_point(out, t_ns, *v);
        }
        Value::String(s) => {
            out.push_str(r#"{"resultType":"string","result":["#);
            write_time(out, t_ns);
            out.push(',');
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
            out.push(']');
        }
        Value::Vector(v) => {
            out.push_str(r#"{"resultType":"vector","result":["#);
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(out, &s.labels);
                out.push_str(r#","value":"#);
                write_point(out, t_ns, s.value);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(m) => {
            out.push_str(r#"{"resultType":"matrix","result":"#);
            write_matrix(out, m);
        }
    }
    out.push('}');
}

/// One request: authorized, parameters read, a database chosen, a store to read.
struct Request {
    params: Params,
    source: StoreSource,
}

impl QueryState {
    fn begin(&self, query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Request, Error> {
        let params = Params::new(query, headers, body)?;
        let resolution = match params.get("resolution") {
            None | Some("auto") | Some("") => Resolution::Auto,
            Some("raw") => Resolution::Raw,
            Some(r) => {
                let secs = parse_duration(r).map(|ns| ns / 1_000_000_000).unwrap_or(0);
                match self.resolutions.iter().find(|&&x| i64::from(x) == secs) {
                    Some(&x) => Resolution::Fixed(x),
                    None => {
                        let known: Vec<String> = self.resolutions.iter().map(|r| format!("{r}s")).collect();
                        return Err(Error::BadData(format!(
                            "invalid parameter \"resolution\": {r:?} is not raw, auto or a rollup resolution ({})",
                            known.join(", ")
                        )));
                    }
                }
            }
        };
        let Some(store) = &self.store else {
            return Err(Error::Execution(
                "no store to query here: this ingest node only tees (set store.backend = \"clickhouse\" to query the cluster)"
                    .into(),
            ));
        };
        let database = params
            .get("db")
            .map(str::to_string)
            .or_else(|| headers.get("x-yaffle-database").and_then(|v| v.to_str().ok()).map(str::to_string))
            .unwrap_or_else(|| self.default_database.clone());
        let source = StoreSource {
            store: Arc::clone(store),
            database,
            max_samples: self.config.max_samples,
            warnings: Default::default(),
            resolution,
            resolutions: Arc::clone(&self.resolutions),
            steps: None,
            served: Default::default(),
        };
        Ok(Request { params, source })
    }

    /// A 401 answer when the request lacks an accepted token.
    fn deny(&self, headers: &HeaderMap) -> Option<Response> {
        let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if yaffle_core::auth::authorized(&self.auth.tokens, header, None) {
            return None;
        }
        let body =
            r#"{"status":"error","errorType":"bad_data","error":"authorization failed: a valid token is required"}"#;
        Some(json_response(StatusCode::UNAUTHORIZED, body.to_string(), &[]))
    }

    fn engine(&self) -> EngineConfig {
        EngineConfig {
            lookback: self.config.lookback_delta,
            default_subquery_step: self.config.default_subquery_step,
            max_samples: self.config.max_samples,
        }
    }

    /// The request's timeout: the configured one, shortened by a `timeout` parameter.
    fn timeout(&self, params: &Params) -> Result<Duration, Error> {
        match params.get("timeout") {
            Some(t) => {
                let ns =
                    parse_duration(t).map_err(|e| Error::BadData(format!("invalid parameter \"timeout\": {e}")))?;
                Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)).min(self.config.timeout))
            }
            None => Ok(self.config.timeout),
        }
    }

    /// Every endpoint's frame: the token check, then `answer`, counted by outcome, an error in
    /// Prometheus' shape.
    async fn respond(
        &self,
        endpoint: &'static str,
        headers: &HeaderMap,
        answer: impl Future<Output = Result<Response, Error>>,
    ) -> Response {
        if let Some(denied) = self.deny(headers) {
            return denied;
        }
        let result = answer.await;
        let status = match &result {
            Ok(_) => "success",
            Err(e) => e.error_type(),
        };
        self.metrics.requests.get_or_create(&EndpointLabels { endpoint, status }).inc();
        result.unwrap_or_else(|e| error_response(&e))
    }

    /// Loads and evaluates `query` within the request's budget, on a blocking thread; dropping the
    /// future (the client went away) cancels the evaluation.
    async fn evaluate(
        &self,
        req: &Request,
        query: Query,
        start: i64,
        end: i64,
        step: Option<i64>,
    ) -> Result<(Value, Vec<Series>), Error> {
        let timeout = self.timeout(&req.params)?;
        let begun = Instant::now();
        let budget = Arc::new(Budget::with_timeout(timeout));
        let _turn = tokio::time::timeout(timeout, self.turns.acquire())
            .await
            .map_err(|_| Error::Timeout("queue"))?
            .map_err(|_| Error::Canceled("queue"))?;
        self.metrics.inflight.inc();
        struct Done<'a>(&'a QueryState, Arc<Budget>, Instant);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                // Still running when the handler is dropped: the client is gone.
                self.1.canceled.store(true, Ordering::Relaxed);
                self.0.metrics.inflight.dec();
                self.0.metrics.duration.observe(self.2.elapsed().as_secs_f64());
            }
        }
        let _done = Done(self, Arc::clone(&budget), begun);
        let cfg = self.engine();
        let remaining = timeout.saturating_sub(begun.elapsed());
        let data = tokio::time::timeout(remaining, query.load(&req.source, start, end, &cfg))
            .await
            .map_err(|_| Error::Timeout("query preparation"))??;
        self.metrics.samples.inc_by(data.iter().flatten().map(|s| s.samples.len() as u64).sum());
        let task = tokio::task::spawn_blocking(move || match step {
            None => query.instant(&data, start, &cfg, &budget).map(|v| (v, Vec::new())),
            Some(step) => query.range(&data, start, end, step, &cfg, &budget).map(|m| (Value::Matrix(Vec::new()), m)),
        });
        task.await.map_err(|e| Error::Execution(format!("query evaluation failed: {e}")))?
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

async fn instant(State(s): State<QueryState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    s.respond("query", &headers, instant_inner(&s, q.as_deref(), &headers, &body)).await
}

async fn instant_inner(s: &QueryState, q: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Response, Error> {
    let req = s.begin(q, headers, body)?;
    let text = req.params.get("query").unwrap_or("");
    // Milliseconds, as Prometheus evaluates at.
    let t = req.params.time_or("time", now_ns())?.div_euclid(1_000_000) * 1_000_000;
    let query = Query::parse(text, t, t)?;
    let (value, _) = s.evaluate(&req, query, t, t, None).await?;
    let mut data = String::new();
    write_value(&mut data, &value, t);
    Ok(answered(&data, &req.source))
}

async fn range(State(s): State<QueryState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    s.respond("query_range", &headers, range_inner(&s, q.as_deref(), &headers, &body)).await
}

async fn range_inner(s: &QueryState, q: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Response, Error> {
    let mut req = s.begin(q, headers, body)?;
    let text = req.params.get("query").unwrap_or("");
    let start = req.params.time("start")?.div_euclid(1_000_000) * 1_000_000;
    let end = req.params.time("end")?.div_euclid(1_000_000) * 1_000_000;
    if end < start {
        return Err(Error::BadData("invalid parameter \"end\": end timestamp must not be before start time".into()));
    }
    let step = match req.params.get("step") {
        Some(v) => parse_duration(v).map_err(|e| Error::BadData(format!("invalid parameter \"step\": {e}")))?,
        None => return Err(Error::BadData("invalid parameter \"step\": cannot parse \"\" to a valid duration".into())),
    };
    let step = step.div_euclid(1_000_000) * 1_000_000;
    if step <= 0 {
        return Err(Error::BadData(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"
                .into(),
        ));
    }
    if (end - start) / step >= s.config.max_points_per_series as i64 {
        return Err(Error::BadData(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            s.config.max_points_per_series
        )));
    }
    let query = Query::parse(text, start, end)?;
    req.source.steps = Some((start, step));
    let (_, matrix) = s.evaluate(&req, query, start, end, Some(step)).await?;
    let mut data = String::from(r#"{"resultType":"matrix","result":"#);
    write_matrix(&mut data, &matrix);
    data.push('}');
    Ok(answered(&data, &req.source))
}

/// The series `match[]` selects between `start` and `end` (every series in the database when no
/// `match[]` is given and `required` is false).
async fn matched_series(s: &QueryState, req: &Request, required: bool) -> Result<Vec<Labels>, Error> {
    let start = req.params.time_or("start", MIN_TIME_NS)?;
    let end = req.params.time_or("end", MAX_TIME_NS)?;
    let mut selectors = req.params.all("match[]");
    if selectors.is_empty() {
        if required {
            return Err(Error::BadData("no match[] parameter provided".into()));
        }
        selectors.push(r#"{__name__=~".+"}"#);
    }
    let timeout = s.timeout(&req.params)?;
    let mut out = BTreeSet::new();
    for text in selectors {
        let query = Query::parse(text, start, end)?;
        let mut selections = query.selections(start, end, &s.engine());
        let (Some(selection), true) = (selections.pop(), selections.is_empty()) else {
            return Err(Error::BadData(format!("invalid parameter \"match[]\": {text:?} is not a series selector")));
        };
        let selection = Selection { start_ns: start, end_ns: end, ..selection };
        let found = tokio::time::timeout(timeout, req.source.read(&selection, false))
            .await
            .map_err(|_| Error::Timeout("series lookup"))??;
        out.extend(found.into_iter().map(|s| s.labels));
    }
    Ok(out.into_iter().collect())
}

async fn series(State(s): State<QueryState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let answer = async {
        let req = s.begin(q.as_deref(), &headers, &body)?;
        let found = matched_series(&s, &req, true).await?;
        let mut data = String::from("[");
        for (i, l) in found.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            write_labels(&mut data, l);
        }
        data.push(']');
        Ok(success(&data, &req.source.warnings.lock().unwrap_or_else(|e| e.into_inner())))
    };
    s.respond("series", &headers, answer).await
}

async fn labels(State(s): State<QueryState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let answer = async {
        let req = s.begin(q.as_deref(), &headers, &body)?;
        let found = matched_series(&s, &req, false).await?;
        let names: BTreeSet<&str> = found.iter().flat_map(|l| l.iter().map(|(k, _)| k)).collect();
        let data = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
        Ok(success(&data, &req.source.warnings.lock().unwrap_or_else(|e| e.into_inner())))
    };
    s.respond("labels", &headers, answer).await
}

async fn label_values(
    State(s): State<QueryState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let req = s.begin(q.as_deref(), &headers, &Bytes::new())?;
        if !valid_label_name(&name) {
            return Err(Error::BadData(format!("invalid label name: {name:?}")));
        }
        let found = matched_series(&s, &req, false).await?;
        let values: BTreeSet<&str> = found.iter().filter_map(|l| l.get(&name)).collect();
        let data = serde_json::to_string(&values).unwrap_or_else(|_| "[]".into());
        Ok(success(&data, &req.source.warnings.lock().unwrap_or_else(|e| e.into_inner())))
    };
    s.respond("label_values", &headers, answer).await
}

async fn metadata() -> Response {
    success("{}", &[])
}

async fn buildinfo() -> Response {
    let data = serde_json::json!({
        "version": PROMETHEUS_VERSION,
        "revision": concat!("yaffle-", env!("CARGO_PKG_VERSION")),
        "branch": "yaffle",
        "buildUser": "yaffle",
        "buildDate": "",
        "goVersion": "",
    });
    success(&data.to_string(), &[])
}
