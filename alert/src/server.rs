//! The evaluator's HTTP API.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/v1/push` | a batch in the Yaffle batch codec, from ingest's alert sink; answers [`Status`](crate::service::Status) |
//! | `GET /api/v1/status` | [`Status`](crate::service::Status) |
//! | `GET /api/v1/rules` | Prometheus' rules API shape (Grafana lists them) |
//! | `GET /api/v1/alerts` | Prometheus' alerts API shape |
//! | `POST /-/reload` | reload the rule files (also on SIGHUP and when a file changes) |
//! | `GET /-/healthy`, `GET /-/ready` | liveness |
//! | `GET /metrics` | Prometheus text format |
//!
//! With `auth.tokens` set, the push and the reload need a token ([`yaffle_core::auth`]), and
//! `/metrics` too when `auth.metrics` is set; reading rules, alerts and status stays open, as on
//! Prometheus. A push body larger than `alert.max_push_bytes` is answered 413.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use yaffle_core::Batch;
use yaffle_core::auth::{self, AuthConfig};

use crate::alerting::{Alert, AlertState, Health, RuleState};
use crate::service::Service;

/// What the routes share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The evaluator.
    pub service: Service,
    /// The registry `/metrics` renders.
    pub registry: Arc<Registry>,
    /// Tokens.
    pub auth: Arc<AuthConfig>,
    /// Largest push body.
    pub max_push_bytes: usize,
}

/// The router.
pub fn app(state: ApiState) -> Router {
    let limit = state.max_push_bytes;
    Router::new()
        .route("/api/v1/push", post(push).layer(DefaultBodyLimit::max(limit)))
        .route("/api/v1/status", get(status))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/-/reload", post(reload))
        .route("/-/healthy", get(|| async { "ok" }))
        .route("/-/ready", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The header a source names the instance it is pushing to with (the alert sink's
/// `INSTANCE_HEADER`): another instance, one that restarted, refuses the push with 409 and its status,
/// so the source replays the history first.
const INSTANCE_HEADER: &str = "x-yaffle-evaluator-instance";

/// `None` when the request may go on, else the 401.
fn refuse_unauthorized(s: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    (!auth::authorized(&s.auth.tokens, header, None))
        .then(|| (StatusCode::UNAUTHORIZED, "authorization failed: send one of auth.tokens\n").into_response())
}

async fn push(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unauthorized(&s, &headers) {
        return refused;
    }
    let status = s.service.status();
    if let Some(expected) = headers.get(INSTANCE_HEADER)
        && expected.as_bytes() != status.instance.as_bytes()
    {
        return (StatusCode::CONFLICT, Json(status)).into_response();
    }
    let batch = match Batch::decode(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body is not a yaffle batch: {e}")).into_response(),
    };
    match s.service.push(batch).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    Json(s.service.status()).into_response()
}

async fn reload(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_unauthorized(&s, &headers) {
        return refused;
    }
    match s.service.reload() {
        Ok(()) => (StatusCode::OK, "rules reloaded\n").into_response(),
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed, the current rules stay:\n{}\n", text.join("\n")),
            )
                .into_response()
        }
    }
}

async fn metrics(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if s.auth.metrics_protected()
        && let Some(refused) = refuse_unauthorized(&s, &headers)
    {
        return refused;
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn rfc3339_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn labels_json(l: &crate::labels::Labels) -> Value {
    Value::Object(l.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect())
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "labels": labels_json(&a.labels),
        "annotations": labels_json(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": rfc3339_ns(a.active_at),
        "value": format!("{:e}", a.value),
    })
}

fn rule_json(r: &RuleState) -> Value {
    let state = r.active.values().map(|a| a.state).max().unwrap_or(AlertState::Inactive);
    let (health, last_error) = match &r.health {
        Health::Unknown => ("unknown", String::new()),
        Health::Ok => ("ok", String::new()),
        Health::Err(e) => ("err", e.clone()),
    };
    json!({
        "type": "alerting",
        "name": r.rule.name,
        "query": r.rule.expr,
        "duration": r.rule.for_.as_secs_f64(),
        "keepFiringFor": r.rule.keep_firing_for.as_secs_f64(),
        "labels": r.rule.labels.iter().map(|(k, t)| (k.clone(), Value::String(t.source().to_string()))).collect::<serde_json::Map<_, _>>(),
        "annotations": r.rule.annotations.iter().map(|(k, t)| (k.clone(), Value::String(t.source().to_string()))).collect::<serde_json::Map<_, _>>(),
        "alerts": r.active.values().filter(|a| a.state != AlertState::Inactive).map(alert_json).collect::<Vec<_>>(),
        "state": state.as_str(),
        "health": health,
        "lastError": last_error,
        "evaluationTime": r.evaluation_time.as_secs_f64(),
        "lastEvaluation": r.last_evaluation.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339_ns),
    })
}

fn record_json(r: &crate::rules::RecordRule) -> Value {
    json!({
        "type": "recording",
        "name": r.name,
        "query": r.expr,
        "labels": r.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "health": "unknown",
        "lastError": "",
        "evaluationTime": 0.0,
        "lastEvaluation": "0001-01-01T00:00:00Z",
    })
}

async fn rules(State(s): State<ApiState>) -> Response {
    let ev = s.service.evaluator.lock().expect("evaluator lock");
    let groups: Vec<Value> = ev
        .rules()
        .groups
        .iter()
        .zip(ev.states())
        .map(|(g, states)| {
            json!({
                "name": g.name,
                "file": g.file.display().to_string(),
                "interval": g.interval.as_secs_f64(),
                "limit": g.limit,
                "rules": states.iter().map(rule_json).chain(g.records.iter().map(|r| record_json(r))).collect::<Vec<_>>(),
                "evaluationTime": states.iter().map(|r| r.evaluation_time.as_secs_f64()).sum::<f64>(),
                "lastEvaluation": states.iter().filter_map(|r| r.last_evaluation).max().map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339_ns),
            })
        })
        .collect();
    Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

async fn alerts(State(s): State<ApiState>) -> Response {
    let ev = s.service.evaluator.lock().expect("evaluator lock");
    let alerts: Vec<Value> = ev
        .states()
        .iter()
        .flatten()
        .flat_map(|r| r.active.values())
        .filter(|a| a.state != AlertState::Inactive)
        .map(alert_json)
        .collect();
    Json(json!({"status": "success", "data": {"alerts": alerts}})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;
    use yaffle_core::{FieldValue, Point, SeriesKey};

    async fn serve(auth: AuthConfig, max_push_bytes: usize) -> (String, tokio::sync::watch::Sender<bool>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let service = Service::start(crate::AlertConfig::default(), metrics, stopped).unwrap();
        let state = ApiState { service, registry: Arc::new(registry), auth: Arc::new(auth), max_push_bytes };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app(state)).await });
        (base, stop)
    }

    fn body(points: usize) -> Vec<u8> {
        let key = Arc::new(SeriesKey::new("db", "m", vec![]));
        let now = crate::evaluator::wall_ns();
        let point = |i: usize| Point::new(Arc::clone(&key), vec![("v".into(), FieldValue::Float(1.0))], now + i as i64);
        Batch::new((0..points).map(point).collect()).encode()
    }

    /// With tokens set, pushes, reloads and (with `auth.metrics`) scrapes need one; reads stay open;
    /// a push over the body limit is a 413.
    #[tokio::test]
    async fn push_reload_and_metrics_need_a_token_and_pushes_are_bounded() {
        let auth = AuthConfig { tokens: vec!["tok".into()], metrics: true };
        let (base, _stop) = serve(auth, 4096).await;
        let client = reqwest::Client::new();
        let push = |token: Option<&str>, points: usize| {
            let r = client.post(format!("{base}/api/v1/push")).body(body(points));
            match token {
                Some(t) => r.bearer_auth(t),
                None => r,
            }
        };
        assert_eq!(push(None, 1).send().await.unwrap().status(), 401);
        assert_eq!(push(Some("nope"), 1).send().await.unwrap().status(), 401);
        assert_eq!(push(Some("tok"), 1).send().await.unwrap().status(), 200);
        assert_eq!(push(Some("tok"), 2000).send().await.unwrap().status(), 413);
        let reload = client.post(format!("{base}/-/reload"));
        assert_eq!(reload.send().await.unwrap().status(), 401);
        let reload = client.post(format!("{base}/-/reload")).bearer_auth("tok");
        assert_eq!(reload.send().await.unwrap().status(), 200);
        assert_eq!(client.get(format!("{base}/metrics")).send().await.unwrap().status(), 401);
        let scrape = client.get(format!("{base}/metrics")).bearer_auth("tok").send().await.unwrap();
        assert_eq!(scrape.status(), 200);
        assert_eq!(client.get(format!("{base}/api/v1/rules")).send().await.unwrap().status(), 200);
    }
}
