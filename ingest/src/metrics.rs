//! Ingest metrics, `yaffle_ingest_*`, registered on an injected registry so tests can read them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use yaffle_log::LogMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub(crate) endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) endpoint: &'static str,
    pub(crate) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub(crate) endpoint: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ShardLabels {
    /// Numbered from 1, like ClickHouse's `shard_num`.
    pub(crate) shard: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReplicaLabels {
    /// The replica's URL.
    pub(crate) replica: String,
}

/// Every ingest metric.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) points: Family<EndpointLabels, Counter>,
    pub(crate) rejected_points: Family<RejectLabels, Counter>,
    pub(crate) request_bytes: Family<EndpointLabels, Counter>,
    pub(crate) active_series: Gauge,
    /// The durable log's metrics (`yaffle_log_*`), registered beside these.
    pub log: Arc<LogMetrics>,
    pub(crate) store_points: Counter,
    pub(crate) store_flushes: Counter,
    pub(crate) store_errors: Counter,
    pub(crate) clickhouse_rows: Family<ShardLabels, Counter>,
    pub(crate) clickhouse_blocks: Family<ShardLabels, Counter>,
    pub(crate) clickhouse_errors: Family<ShardLabels, Counter>,
    pub(crate) clickhouse_position: Family<ShardLabels, Gauge>,
    pub(crate) alert_points: Family<ReplicaLabels, Counter>,
    pub(crate) alert_errors: Family<ReplicaLabels, Counter>,
    pub(crate) alert_replays: Family<ReplicaLabels, Counter>,
    pub(crate) alert_position: Family<ReplicaLabels, Gauge>,
    pub(crate) kafka_points: Counter,
    pub(crate) kafka_messages: Counter,
    pub(crate) kafka_bytes: Counter,
    pub(crate) kafka_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under `yaffle_ingest_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self { log: Arc::new(LogMetrics::new(registry)), ..Self::default() };
        let r = registry.sub_registry_with_prefix("yaffle_ingest");
        r.register("requests", "HTTP requests by endpoint and status", m.requests.clone());
        r.register("points", "Points accepted and appended to the log", m.points.clone());
        r.register(
            "active_series",
            "Series seen within the last hour or two (limits.max_active_series)",
            m.active_series.clone(),
        );
        r.register("rejected_points", "Points rejected, by reason", m.rejected_points.clone());
        r.register("request_bytes", "Request body bytes received (before decompression)", m.request_bytes.clone());
        r.register("store_sink_points", "Points written to the store by the store sink", m.store_points.clone());
        r.register("store_sink_flushes", "Store sink flushes", m.store_flushes.clone());
        r.register("store_sink_errors", "Store sink write failures (retried)", m.store_errors.clone());
        r.register("clickhouse_rows", "Rows inserted into each ClickHouse shard", m.clickhouse_rows.clone());
        r.register("clickhouse_blocks", "Blocks inserted into each ClickHouse shard", m.clickhouse_blocks.clone());
        r.register(
            "clickhouse_insert_errors",
            "Failed inserts into each ClickHouse shard (every replica tried; retried)",
            m.clickhouse_errors.clone(),
        );
        r.register(
            "clickhouse_shard_position",
            "Log position up to which each ClickHouse shard has its rows",
            m.clickhouse_position.clone(),
        );
        r.register("alert_sink_points", "Points delivered to each evaluator replica", m.alert_points.clone());
        r.register("alert_sink_errors", "Failed pushes to each evaluator replica (retried)", m.alert_errors.clone());
        r.register("alert_sink_replays", "Replays after an evaluator replica restarted", m.alert_replays.clone());
        r.register("alert_sink_position", "Log position delivered to each evaluator replica", m.alert_position.clone());
        r.register("kafka_sink_points", "Points the broker acknowledged", m.kafka_points.clone());
        r.register("kafka_sink_messages", "Messages the broker acknowledged", m.kafka_messages.clone());
        r.register("kafka_sink_bytes", "Message bytes acknowledged, before compression", m.kafka_bytes.clone());
        r.register("kafka_sink_errors", "Failed message deliveries (retried)", m.kafka_errors.clone());
        m
    }
}
