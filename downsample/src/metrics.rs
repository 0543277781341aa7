//! Downsampling metrics, `yaffle_downsample_*`, registered on an injected registry so tests can read
//! them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MeasurementLabels {
    pub(crate) measurement: String,
}

/// Every downsampling metric.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) points: Counter,
    pub(crate) late_points: Family<MeasurementLabels, Counter>,
    pub(crate) future_points: Counter,
    pub(crate) rollups_written: Counter,
    pub(crate) write_errors: Counter,
    pub(crate) pending_rollups: Gauge,
    pub(crate) open_series_fields: Gauge,
    pub(crate) partitions: Gauge,
    pub(crate) rebuilds: Counter,
    pub(crate) replayed_records: Counter,
    pub(crate) rebuild_seconds: Histogram,
    pub(crate) bad_records: Counter,
    pub(crate) watermark_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// Creates the metrics and registers them under `yaffle_downsample_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("yaffle_downsample");
        r.register("points", "Points read from the log (replays included)", m.points.clone());
        r.register(
            "late_points",
            "Values not folded into a window of some resolution because it had closed",
            m.late_points.clone(),
        );
        r.register(
            "future_points",
            "Points dropped for being more than downsample.max_future ahead of their ingest time",
            m.future_points.clone(),
        );
        r.register("rollups_written", "Rollup rows written to the store", m.rollups_written.clone());
        r.register("write_errors", "Failed rollup writes (retried)", m.write_errors.clone());
        r.register("pending_rollups", "Rollup rows waiting to be written", m.pending_rollups.clone());
        r.register("open_series_fields", "(series, field) pairs with an open window", m.open_series_fields.clone());
        r.register("partitions", "Partitions this worker owns", m.partitions.clone());
        r.register("rebuilds", "Partitions whose windows were rebuilt by a replay", m.rebuilds.clone());
        r.register(
            "replayed_records",
            "Records read again to rebuild windows (before the committed position)",
            m.replayed_records.clone(),
        );
        r.register(
            "rebuild_seconds",
            "From a partition's assignment until its replay reached the commit",
            m.rebuild_seconds.clone(),
        );
        r.register("bad_records", "Records that did not decode (skipped, logged)", m.bad_records.clone());
        r.register(
            "watermark_seconds",
            "The highest watermark of the owned partitions (event time, unix seconds)",
            m.watermark_seconds.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            points: Counter::default(),
            late_points: Family::default(),
            future_points: Counter::default(),
            rollups_written: Counter::default(),
            write_errors: Counter::default(),
            pending_rollups: Gauge::default(),
            open_series_fields: Gauge::default(),
            partitions: Gauge::default(),
            rebuilds: Counter::default(),
            replayed_records: Counter::default(),
            // 10 ms to about 80 s.
            rebuild_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            bad_records: Counter::default(),
            watermark_seconds: Gauge::default(),
        }
    }
}
