//! Evaluator configuration (`[alert]` in the config file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// One Alertmanager, or a plain webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Base URL of an Alertmanager (alerts go to `<url>/api/v2/alerts`), or the full URL of a webhook.
    pub url: String,
}

/// How the evaluator reads rules, keeps time and notifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Where `yaffle alert` serves its API (pushes from ingest, `/api/v1/rules`, `/metrics`, ...).
    pub bind: SocketAddr,
    /// Largest push body taken (413 past it); ingest's `sinks.alert.max_push_bytes` stays under it.
    pub max_push_bytes: ByteSize,
    /// Rule files, or directories whose `*.yml`/`*.yaml` files are rule files.
    pub rule_files: Vec<PathBuf>,
    /// How often rules are evaluated without new points (for `for`, staleness and absence), files are
    /// checked for changes, and alerts are resent.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A group's `interval` when it has none (used for `endsAt`, as in Prometheus).
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
    /// How far back an instant selector looks for a series' latest sample (Prometheus' lookback delta).
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Points further than this ahead of the wall clock are dropped (and counted), so one bad clock
    /// cannot move event time.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Most series held; new series past it are dropped and counted.
    pub max_series: usize,
    /// Firing alerts are resent this often.
    #[serde(with = "humantime_serde")]
    pub resend_delay: Duration,
    /// Alertmanagers (API v2); every alert goes to each.
    pub alertmanagers: Vec<Receiver>,
    /// Plain webhooks: each gets Alertmanager's webhook JSON (`version` 4) for every batch sent.
    pub webhooks: Vec<Receiver>,
    /// Timeout of one notification request.
    #[serde(with = "humantime_serde")]
    pub notify_timeout: Duration,
    /// Alerts waiting to be sent, per receiver; the oldest are dropped (and counted) past it.
    pub notify_queue: usize,
    /// Labels added to every alert (keep them identical on the two replicas of a pair, so
    /// Alertmanager deduplicates their alerts).
    pub external_labels: BTreeMap<String, String>,
    /// URL of this evaluator, for templates (`$externalURL`) and alerts' `generatorURL`.
    pub external_url: String,
    /// CA certificates (PEM) that `https://` Alertmanagers and webhooks are verified against; empty:
    /// https receivers cannot be verified and their sends fail (no built-in roots are trusted).
    pub tls_ca: PathBuf,
    /// Where recording rule results go.
    pub recording: RecordingConfig,
}

/// `[alert.recording]`: recording rule results are written back through ingest (remote_write), so
/// they are stored, rolled up and readable like any series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Ingest's remote_write URL, e.g. `http://ingest:8086/api/v1/write`. Standalone fills in its own
    /// listener when empty; a separate evaluator with recording rules needs it.
    pub url: String,
    /// The database the results are written to.
    pub database: String,
    /// Token sent to ingest when its auth is on.
    pub token: String,
    /// Timeout of one write.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Results waiting to be written, in series; the oldest are dropped (and counted) past it.
    pub queue: usize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "prometheus".into(),
            token: String::new(),
            timeout: Duration::from_secs(10),
            queue: 100_000,
        }
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9096)),
            max_push_bytes: ByteSize::mib(16),
            rule_files: Vec::new(),
            tick: Duration::from_secs(1),
            default_interval: Duration::from_secs(60),
            lookback: Duration::from_secs(300),
            max_future: Duration::from_secs(600),
            max_series: 1_000_000,
            resend_delay: Duration::from_secs(60),
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
            notify_timeout: Duration::from_secs(10),
            notify_queue: 10_000,
            external_labels: BTreeMap::new(),
            external_url: String::new(),
            tls_ca: PathBuf::new(),
            recording: RecordingConfig::default(),
        }
    }
}

impl AlertConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick.is_zero() || self.lookback.is_zero() || self.resend_delay.is_zero() {
            return Err("alert.tick, alert.lookback and alert.resend_delay must be positive".into());
        }
        if self.max_series == 0 || self.notify_queue == 0 {
            return Err("alert.max_series and alert.notify_queue must be positive".into());
        }
        if !self.tls_ca.as_os_str().is_empty() {
            read_ca(&self.tls_ca).map_err(|e| format!("alert.tls_ca: {e}"))?;
        }
        for r in self.alertmanagers.iter().chain(&self.webhooks) {
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                return Err(format!("alert receiver url {:?} must start with http:// or https://", r.url));
            }
        }
        Ok(())
    }
}

/// The CA certificates of a PEM file, for an HTTP client to trust.
pub fn read_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}
