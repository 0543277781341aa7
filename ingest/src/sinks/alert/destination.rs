//! Where the alert sink delivers: an evaluator replica.

use std::time::Duration;

use async_trait::async_trait;
use yaffle_core::Batch;

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
    /// Delivers points to the evaluator instance `expected` (any, when `None`). `Ok((ack, true))` once
    /// it holds them; `Ok((ack, false))`, with nothing delivered, when another instance answered: the
    /// evaluator restarted and needs its history first.
    async fn push(&self, batch: &Batch, expected: Option<&str>) -> Result<(Ack, bool), String>;
}

/// A `yaffle alert` process, over HTTP.
#[derive(Debug)]
pub struct HttpDestination {
    base: String,
    client: reqwest::Client,
}

impl HttpDestination {
    /// A replica at `base` (e.g. `http://127.0.0.1:9096`).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder().timeout(timeout).build().expect("http client");
        Self { base: base.trim_end_matches('/').to_string(), client }
    }

    /// The evaluator's answer, and whether it accepted (a 409 carries the status of another instance).
    async fn ack(response: Result<reqwest::Response, reqwest::Error>) -> Result<(Ack, bool), String> {
        let r = response.map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        let ack = serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))?;
        Ok((ack, status.is_success()))
    }
}

#[async_trait]
impl Destination for HttpDestination {
    fn name(&self) -> String {
        self.base.clone()
    }

    async fn status(&self) -> Result<Ack, String> {
        Self::ack(self.client.get(format!("{}/api/v1/status", self.base)).send().await).await.map(|(a, _)| a)
    }

    async fn push(&self, batch: &Batch, expected: Option<&str>) -> Result<(Ack, bool), String> {
        let mut request = self.client.post(format!("{}/api/v1/push", self.base)).body(batch.encode());
        if let Some(instance) = expected {
            request = request.header(INSTANCE_HEADER, instance);
        }
        Self::ack(request.send().await).await
    }
}
