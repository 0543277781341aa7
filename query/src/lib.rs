//! Yaffle's read side: the Prometheus HTTP API over the store, evaluated by [`yaffle_promql`].
//!
//! | route | what |
//! | --- | --- |
//! | `GET,POST /api/v1/query` | instant query: `query`, `time` (default now), `timeout` |
//! | `GET,POST /api/v1/query_range` | range query: `query`, `start`, `end`, `step`, `timeout` |
//! | `GET,POST /api/v1/series` | series matching `match[]` between `start` and `end` |
//! | `GET,POST /api/v1/labels` | label names (of the series matching `match[]`, when given) |
//! | `GET /api/v1/label/<name>/values` | values of one label |
//! | `GET /api/v1/metadata` | metric metadata: none is kept, so always empty |
//! | `GET /api/v1/status/buildinfo` | the Prometheus version whose API this is, and Yaffle's |
//!
//! Answers have Prometheus' JSON shapes, `warnings` and `errorType`s (`bad_data` 400, `execution`
//! 422, `timeout` and `canceled` 503). A line-protocol field is the metric `<measurement>_<field>`
//! (`value` is the bare measurement), tags are labels. The database is `db` (parameter) or the
//! `X-Yaffle-Database` header, by default the remote_write database. The token auth applies.
//!
//! Each selector is read from raw points or from rollups, chosen per query (`resolution=auto`, the
//! default) or forced (`resolution=raw|1m|5m|1h`); the `X-Yaffle-Resolution` header says what
//! served the answer. The rules are in [`source`].
//!
//! A request is bounded by `query.timeout`, `query.max_samples` (loaded and produced),
//! `query.max_points_per_series` (Prometheus' 11 000 steps) and `query.max_concurrent` (others
//! wait, within their timeout); a client that disconnects cancels its query.

mod api;
mod params;
pub mod source;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use yaffle_core::auth::AuthConfig;
use yaffle_store::Store;

pub use api::router;

/// `[query]`: the Prometheus API's settings and bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Longest a query may run (a request's `timeout` may only shorten it).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Samples a query may load and produce.
    pub max_samples: usize,
    /// Steps a range query may have.
    pub max_points_per_series: usize,
    /// Queries evaluated at once; more wait for a turn.
    pub max_concurrent: usize,
    /// How far back an instant selector looks for a sample.
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Step of a subquery that names none.
    #[serde(with = "humantime_serde")]
    pub default_subquery_step: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
            max_concurrent: 20,
            lookback_delta: Duration::from_secs(300),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

impl QueryConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() || self.lookback_delta.is_zero() || self.default_subquery_step.is_zero() {
            return Err("query.timeout, query.lookback_delta and query.default_subquery_step must be positive".into());
        }
        if self.max_samples == 0 || self.max_points_per_series == 0 || self.max_concurrent == 0 {
            return Err(
                "query.max_samples, query.max_points_per_series and query.max_concurrent must be positive".into()
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    status: &'static str,
}

/// The query API's metrics.
#[derive(Debug)]
pub struct QueryMetrics {
    requests: Family<EndpointLabels, Counter>,
    duration: Histogram,
    inflight: Gauge,
    samples: Counter,
}

impl QueryMetrics {
    /// Registers the metrics under `yaffle_query_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            inflight: Gauge::default(),
            samples: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("yaffle_query");
        r.register(
            "requests",
            "Prometheus API requests by endpoint and outcome (success or the errorType)",
            m.requests.clone(),
        );
        r.register("duration_seconds", "Time to answer a query", m.duration.clone());
        r.register("inflight", "Queries being evaluated", m.inflight.clone());
        r.register("samples_loaded", "Samples read from the store for queries", m.samples.clone());
        m
    }
}

/// What the API's handlers share.
#[derive(Debug, Clone)]
pub struct QueryState {
    /// The store read; `None` in an ingest role without one (queries then fail with an `execution`
    /// error naming the cause).
    pub store: Option<Arc<dyn Store>>,
    /// Settings and bounds.
    pub config: Arc<QueryConfig>,
    /// The database of a request that names none.
    pub default_database: String,
    /// Tokens.
    pub auth: Arc<AuthConfig>,
    /// Metrics.
    pub metrics: Arc<QueryMetrics>,
    /// Turns for evaluation (`max_concurrent`).
    pub turns: Arc<tokio::sync::Semaphore>,
    /// The rollup resolutions the downsampler writes (seconds), ascending.
    pub resolutions: Arc<Vec<u32>>,
}

impl QueryState {
    /// State for `store` with `config`, registering the metrics in `registry`; `resolutions` are
    /// the rollups the downsampler writes.
    pub fn new(
        store: Option<Arc<dyn Store>>,
        config: QueryConfig,
        default_database: String,
        auth: Arc<AuthConfig>,
        resolutions: &[Duration],
        registry: &mut Registry,
    ) -> Self {
        let mut resolutions: Vec<u32> = resolutions.iter().filter_map(|r| u32::try_from(r.as_secs()).ok()).collect();
        resolutions.sort_unstable();
        Self {
            resolutions: Arc::new(resolutions),
            store,
            turns: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent)),
            config: Arc::new(config),
            default_database,
            auth,
            metrics: Arc::new(QueryMetrics::new(registry)),
        }
    }
}
