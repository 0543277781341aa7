//! Where the alert sink delivers: an evaluator replica.

use std::time::Duration;

use async_trait::async_trait;
use yaffle_core::Batch;
use yaffle_log::sink::SinkError;

/// The header naming the evaluator instance a push is meant for; another instance answers 409.
pub const INSTANCE_HEADER: &str = "x-yaffle-evaluator-instance";

/// What an evaluator says about itself after a push or a status request.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Ack {
    /// Changes when the evaluator restarts with empty state.
    pub instance: String,
    /// History that rebuilds its state, in seconds.
    pub horizon_seconds: f64,
}

impl Ack {
    /// The horizon in nanoseconds.
    pub fn horizon_ns(&self) -> i64 {
        Duration::from_secs_f64(self.horizon_seconds.max(0.0)).as_nanos() as i64
    }
}

/// An evaluator replica.
#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// A name for logs and metrics.
    fn name(&self) -> String;
    /// The evaluator's identity and horizon.
    async fn status(&self) -> Result<Ack, String>;
    /// Delivers points (`batch`, and `encoded`, its encoding) to the evaluator instance `expected` (any,
    /// when `None`). `Ok((ack, true))` once it holds them; `Ok((ack, false))`, with nothing delivered,
    /// when another instance answered: the evaluator restarted and needs its history first. An error
    /// is fatal when the evaluator refused the content itself (retrying would send the same).
    async fn push(&self, batch: &Batch, encoded: &[u8], expected: Option<&str>) -> Result<(Ack, bool), SinkError>;
}

/// A `yaffle alert` process, over HTTP.
#[derive(Debug)]
pub struct HttpDestination {
    base: String,
    client: reqwest::Client,
}

impl HttpDestination {
    /// A replica at `base` (e.g. `http://127.0.0.1:9096`), sent `token` as a bearer token unless it is
    /// empty; `https://` replicas are verified against `ca`.
    pub fn new(base: &str, timeout: Duration, token: &str, ca: &[reqwest::Certificate]) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if !token.is_empty()
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut client = reqwest::Client::builder().timeout(timeout).default_headers(headers);
        for c in ca {
            client = client.add_root_certificate(c.clone());
        }
        let client = client.build().expect("http client");
        Self { base: base.trim_end_matches('/').to_string(), client }
    }

    /// The evaluator's answer, and whether it accepted (a 409 carries the status of another instance).
    /// A 4xx other than 408, 409 and 429 refuses the request itself: fatal.
    async fn ack(response: Result<reqwest::Response, reqwest::Error>) -> Result<(Ack, bool), SinkError> {
        let r = response.map_err(SinkError::retryable)?;
        let status = r.status();
        let body = r.bytes().await.map_err(SinkError::retryable)?;
        if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
            let message = format!("{status}: {}", String::from_utf8_lossy(&body));
            let permanent = status.is_client_error() && ![408, 429].contains(&status.as_u16());
            return Err(if permanent {
                let hint = if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                    " (sinks.alert.max_push_bytes must not exceed the evaluator's alert.max_push_bytes)"
                } else {
                    ""
                };
                SinkError::fatal(format!("evaluator refused the push: {message}{hint}"))
            } else {
                SinkError::retryable(message)
            });
        }
        let ack = serde_json::from_slice(&body).map_err(|e| SinkError::retryable(format!("unexpected answer: {e}")))?;
        Ok((ack, status.is_success()))
    }
}

#[async_trait]
impl Destination for HttpDestination {
    fn name(&self) -> String {
        self.base.clone()
    }

    async fn status(&self) -> Result<Ack, String> {
        Self::ack(self.client.get(format!("{}/api/v1/status", self.base)).send().await)
            .await
            .map(|(a, _)| a)
            .map_err(|e| e.to_string())
    }

    async fn push(&self, _batch: &Batch, encoded: &[u8], expected: Option<&str>) -> Result<(Ack, bool), SinkError> {
        let mut request = self.client.post(format!("{}/api/v1/push", self.base)).body(encoded.to_vec());
        if let Some(instance) = expected {
            request = request.header(INSTANCE_HEADER, instance);
        }
        Self::ack(request.send().await).await
    }
}
