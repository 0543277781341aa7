//! Ingest configuration: HTTP listener, request limits and authentication.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use yaffle_core::line_protocol::SeriesLimits;
use yaffle_core::remote_write;

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. The default, `127.0.0.1:8086`, is InfluxDB's port on loopback only, so local
    /// agents need no change and nothing is exposed until you choose to (`0.0.0.0:8086`).
    pub bind: SocketAddr,
    /// Database for `/write` requests without `db` (InfluxDB 1.x would refuse them).
    pub default_database: String,
    /// Database for remote_write requests without `db`.
    pub remote_write_database: String,
    /// Connections served at once; more wait in the kernel's backlog. Keep it under the process's
    /// open-file limit, with room for the log, the store and the peers.
    pub max_connections: usize,
    /// A request's headers must arrive within this, timed from when the connection waits for one (so
    /// also the longest a keep-alive connection idles).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this (408 past it).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// At shutdown, how long requests in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// HTTPS instead of HTTP.
    pub tls: TlsConfig,
}

/// A listener's certificate: with both files set, it serves TLS (rustls; TLS 1.2 and 1.3), and picks
/// the files up again when either changes (checked at most once a second, on new connections). A
/// broken new pair is logged and the previous one kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first. Empty: plain HTTP.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty() || !self.key.as_os_str().is_empty()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8086)),
            default_database: "default".into(),
            remote_write_database: "prometheus".into(),
            max_connections: 1000,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            tls: TlsConfig::default(),
        }
    }
}

impl HttpConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.header_read_timeout.is_zero() || self.body_read_timeout.is_zero() {
            return Err(
                "http.max_connections, http.header_read_timeout and http.body_read_timeout must be positive".into()
            );
        }
        Ok(())
    }
}

/// Limits on one request. Past a limit the request is answered 413 (sizes, points) or the line is
/// rejected as part of a partial write (line length), with a message naming the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Request body as received.
    pub max_body_bytes: ByteSize,
    /// Body after gzip or snappy decompression (guards against compression bombs).
    pub max_decompressed_bytes: ByteSize,
    /// One line of line protocol.
    pub max_line_bytes: ByteSize,
    /// Points (lines, or remote_write samples) in one request.
    pub max_points_per_request: usize,
    /// Series in one remote_write request.
    pub max_series_per_request: usize,
    /// Tags (line protocol) or labels other than `__name__` (remote_write) on one series.
    pub max_labels_per_series: usize,
    /// A tag key or label name, in bytes.
    pub max_label_name_bytes: usize,
    /// A tag value, label value or measurement name, in bytes.
    pub max_label_value_bytes: usize,
    /// Points further than this ahead of the server clock are refused, each on its own (partial
    /// write: the others are kept).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Points older than this are refused the same way; zero: no bound (imports of old data).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Distinct UTC days the points of one request may fall on (each is a partition of the stores);
    /// points on further days are refused each on its own. The default is ClickHouse's
    /// `max_partitions_per_insert_block`.
    pub max_days_per_request: usize,
    /// Different series accepted within an hour, over all databases; points of new series past it
    /// are refused each on its own (see [`crate::cardinality`]).
    pub max_active_series: usize,
    /// The same, in any one database.
    pub max_active_series_per_database: usize,
    /// Measurements a request may introduce (not yet in the field-type registry); points of further
    /// new ones are refused each on its own.
    pub max_new_measurements_per_request: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: ByteSize::mib(32),
            max_decompressed_bytes: ByteSize::mib(256),
            max_line_bytes: ByteSize::kib(64),
            max_points_per_request: 1_000_000,
            max_series_per_request: 100_000,
            max_labels_per_series: 128,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
            max_future: Duration::from_secs(2 * 86_400),
            max_age: Duration::ZERO,
            max_days_per_request: 100,
            max_active_series: 1_000_000,
            max_active_series_per_database: 1_000_000,
            max_new_measurements_per_request: 10_000,
        }
    }
}

impl LimitsConfig {
    /// The series limits line protocol checks.
    pub fn series_limits(&self) -> SeriesLimits {
        SeriesLimits {
            max_tags: self.max_labels_per_series,
            max_name_bytes: self.max_label_name_bytes,
            max_value_bytes: self.max_label_value_bytes,
        }
    }

    /// The limits remote_write is decoded under.
    pub fn remote_write_limits(&self) -> remote_write::Limits {
        remote_write::Limits {
            max_decompressed_bytes: self.max_decompressed_bytes.as_u64() as usize,
            max_points: self.max_points_per_request,
            max_series: self.max_series_per_request,
            max_labels_per_series: self.max_labels_per_series,
            max_label_name_bytes: self.max_label_name_bytes,
            max_label_value_bytes: self.max_label_value_bytes,
        }
    }
}

pub use yaffle_core::auth::AuthConfig;
