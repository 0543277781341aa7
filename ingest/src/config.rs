//! Ingest configuration: HTTP listener, request limits and authentication.

use std::net::SocketAddr;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8086)),
            default_database: "default".into(),
            remote_write_database: "prometheus".into(),
        }
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: ByteSize::mib(32),
            max_decompressed_bytes: ByteSize::mib(256),
            max_line_bytes: ByteSize::kib(64),
            max_points_per_request: 1_000_000,
        }
    }
}

/// Authentication. With no tokens, authentication is off.
///
/// A token is accepted as `Authorization: Token <t>` (InfluxDB 2.x), `Authorization: Bearer <t>`
/// (Prometheus remote_write), as the password of Basic auth or of the `u`/`p` query parameters
/// (InfluxDB 1.x clients; the user name is not checked), the way InfluxDB 2.x's 1.x compatibility API
/// takes tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens.
    pub tokens: Vec<String>,
}

impl AuthConfig {
    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}
