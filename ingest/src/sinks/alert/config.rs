//! Alert sink configuration.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use yaffle_core::strategy::{DistributionConfig, Strategy};

/// One evaluator: one replica, or a pair (or more) that all receive the same points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorTarget {
    /// Base URLs of the replicas (`yaffle alert`'s `alert.bind`), e.g. `http://10.0.0.5:9096`.
    pub replicas: Vec<String>,
}

/// Where ingest sends points for alerting, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSinkConfig {
    /// The evaluators. A point goes to evaluator `route % evaluators.len()`, to each of its replicas.
    pub evaluators: Vec<EvaluatorTarget>,
    /// How points are routed; by measurement by default, so a rule aggregating across the series of a
    /// measurement sees all of them.
    pub distribution: DistributionConfig,
    /// Log bytes read per step.
    pub read_bytes: ByteSize,
    /// Timeout of one push.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest push body: more points are pushed in several parts. At most the evaluator's
    /// `alert.max_push_bytes`, which answers 413 past it (a fatal error of the sink, reported).
    pub max_push_bytes: ByteSize,
    /// Bearer token sent with every request to the evaluators (one of their `auth.tokens`); empty:
    /// none.
    pub token: String,
    /// CA certificates (PEM) that `https://` evaluators are verified against; empty: https evaluators
    /// cannot be verified (no built-in roots are trusted).
    pub tls_ca: std::path::PathBuf,
    /// First retry delay after a failed push; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for AlertSinkConfig {
    fn default() -> Self {
        Self {
            evaluators: Vec::new(),
            distribution: DistributionConfig { strategy: Strategy::Measurement, ..DistributionConfig::default() },
            read_bytes: ByteSize::mib(1),
            timeout: Duration::from_secs(10),
            max_push_bytes: ByteSize::mib(8),
            token: String::new(),
            tls_ca: std::path::PathBuf::new(),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

impl AlertSinkConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        yaffle_core::strategy::Distribution::new(&self.distribution)
            .map_err(|e| format!("sinks.alert.distribution: {e}"))?;
        for (i, e) in self.evaluators.iter().enumerate() {
            if e.replicas.is_empty() {
                return Err(format!("sinks.alert.evaluators[{i}] has no replicas"));
            }
            if let Some(u) = e.replicas.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
                return Err(format!("sinks.alert.evaluators[{i}]: {u:?} must start with http:// or https://"));
            }
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max || self.timeout.is_zero() {
            return Err(
                "sinks.alert: timeout and retry_initial must be positive, retry_initial at most retry_max".into()
            );
        }
        Ok(())
    }
}
