//! Read endpoints: InfluxQL's `CREATE DATABASE` (what agents send at start-up) and SQL.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::instrument;
use yaffle_store::OutputFormat;

use super::{AppState, Dialect, auth, count, error_response, status_of};

/// Query-string and form parameters, merged (the form wins).
fn params(query: HashMap<String, String>, headers: &HeaderMap, body: &Bytes) -> HashMap<String, String> {
    let mut all = query;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if is_form && let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        all.extend(form);
    }
    all
}

#[instrument(skip_all)]
pub(super) async fn influxql(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(query, &headers, &body);
    let r = if !auth::authorized(&s.auth, &headers, p.get("p").map(String::as_str)) {
        error_response(Dialect::V1, StatusCode::UNAUTHORIZED, "authorization failed")
    } else {
        let q = p.get("q").map(String::as_str).unwrap_or("");
        let statements: Vec<&str> = q.split(';').map(str::trim).filter(|st| !st.is_empty()).collect();
        if statements.is_empty() {
            error_response(Dialect::V1, StatusCode::BAD_REQUEST, "missing required parameter \"q\"")
        } else if let Some(other) = statements.iter().find(|st| !is_create_database(st)) {
            let msg = format!(
                "InfluxQL is not supported (statement {other:?}); only CREATE DATABASE is accepted. Query with SQL at /api/v1/sql"
            );
            error_response(Dialect::V1, StatusCode::NOT_IMPLEMENTED, &msg)
        } else {
            let results: Vec<_> = (0..statements.len()).map(|i| serde_json::json!({ "statement_id": i })).collect();
            (StatusCode::OK, axum::Json(serde_json::json!({ "results": results }))).into_response()
        }
    };
    count(&s, "query", &r);
    r
}

fn is_create_database(statement: &str) -> bool {
    let words: Vec<&str> = statement.split_whitespace().take(2).collect();
    words.len() == 2 && words[0].eq_ignore_ascii_case("create") && words[1].eq_ignore_ascii_case("database")
}

#[instrument(skip_all, fields(rows = tracing::field::Empty))]
pub(super) async fn sql(
    State(s): State<AppState>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = sql_inner(&s, method, query, &headers, body).await;
    count(&s, "sql", &r);
    r
}

async fn sql_inner(
    s: &AppState,
    method: Method,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if !auth::authorized(&s.auth, headers, None) {
        return error_response(Dialect::V1, StatusCode::UNAUTHORIZED, "authorization failed");
    }
    let p = params(query, headers, &body);
    let statement = match p.get("q") {
        Some(q) => q.clone(),
        None if method == Method::POST && !body.is_empty() => match std::str::from_utf8(&body) {
            Ok(text) => text.to_string(),
            Err(_) => return error_response(Dialect::V1, StatusCode::BAD_REQUEST, "the SQL body is not UTF-8"),
        },
        None => {
            return error_response(
                Dialect::V1,
                StatusCode::BAD_REQUEST,
                "missing SQL: pass q=... or POST it as the body",
            );
        }
    };
    let accepts_csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    let format = match p.get("format").map(String::as_str) {
        Some(f) => match OutputFormat::parse(f) {
            Some(f) => f,
            None => {
                return error_response(
                    Dialect::V1,
                    StatusCode::BAD_REQUEST,
                    &format!("unknown format {f:?}: use json, csv or table"),
                );
            }
        },
        None if accepts_csv => OutputFormat::Csv,
        None => OutputFormat::Json,
    };
    let Some(store) = &s.store else {
        let msg = "no store to query here: this ingest node only tees (set store.backend = \"clickhouse\" to query the cluster)";
        return error_response(Dialect::V1, StatusCode::NOT_IMPLEMENTED, msg);
    };
    match store.query(&statement).await {
        Ok(result) => {
            tracing::Span::current().record("rows", result.num_rows());
            match result.render(format) {
                Ok(bytes) => {
                    let mut response = ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response();
                    // A partial answer (a ClickHouse shard down) says so, and which part is missing.
                    for w in &result.warnings {
                        tracing::warn!(warning = %w, "partial query result");
                        if let Ok(v) = header::HeaderValue::from_str(w) {
                            response.headers_mut().append("x-yaffle-warning", v);
                        }
                    }
                    response
                }
                Err(e) => error_response(Dialect::V1, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Err(e) => error_response(Dialect::V1, status_of(&e), &e.to_string()),
    }
}
