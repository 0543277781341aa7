//! Log metrics, `yaffle_log_*`, registered on an injected registry so tests can read them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cursor::CursorName;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CursorLabels {
    cursor: &'static str,
}

/// Every log metric.
#[derive(Debug, Default)]
pub struct LogMetrics {
    pub(crate) appends: Counter,
    pub(crate) bytes: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) errors: Counter,
    pub(crate) poisoned: Gauge,
    pub(crate) refused_too_large: Counter,
    pub(crate) end: Gauge,
    pub(crate) segments: Gauge,
    pub(crate) corrupt_regions: Counter,
    cursor_position: Family<CursorLabels, Gauge>,
    cursor_lag: Family<CursorLabels, Gauge>,
    cursor_dropped_bytes: Family<CursorLabels, Counter>,
    cursor_blocked: Family<CursorLabels, Counter>,
    cursor_skipped_bytes: Family<CursorLabels, Counter>,
}

impl LogMetrics {
    /// Creates the metrics and registers them under `yaffle_log_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("yaffle_log");
        r.register("appends", "Records appended", m.appends.clone());
        r.register("bytes", "Bytes appended", m.bytes.clone());
        r.register("fsyncs", "fsync calls on segments", m.fsyncs.clone());
        r.register("errors", "Failed writes, fsyncs and segment rolls", m.errors.clone());
        r.register(
            "poisoned",
            "1 once an fsync failed: appends are refused until the log is reopened",
            m.poisoned.clone(),
        );
        r.register(
            "refused_too_large",
            "Appends refused for exceeding log.max_record_bytes",
            m.refused_too_large.clone(),
        );
        r.register("end_position", "End position of the log in bytes", m.end.clone());
        r.register("segments", "Segment files on disk", m.segments.clone());
        r.register(
            "corrupt_regions",
            "Corrupt stretches of the log found by recovery or a reader (each logged with its position)",
            m.corrupt_regions.clone(),
        );
        r.register("cursor_position", "Committed position of each sink's cursor", m.cursor_position.clone());
        r.register(
            "cursor_lag_bytes",
            "How far each enabled cursor is behind the end of the log",
            m.cursor_lag.clone(),
        );
        r.register(
            "cursor_dropped_bytes",
            "Log bytes a drop_oldest cursor skipped over its budget",
            m.cursor_dropped_bytes.clone(),
        );
        r.register(
            "cursor_blocked",
            "Appends refused because a block cursor was over its budget",
            m.cursor_blocked.clone(),
        );
        r.register(
            "cursor_skipped_corrupt_bytes",
            "Corrupt log bytes each cursor's reader skipped",
            m.cursor_skipped_bytes.clone(),
        );
        m
    }

    pub(crate) fn cursor_position(&self, c: CursorName) -> Gauge {
        self.cursor_position.get_or_create(&CursorLabels { cursor: c.as_str() }).clone()
    }

    pub(crate) fn cursor_lag(&self, c: CursorName) -> Gauge {
        self.cursor_lag.get_or_create(&CursorLabels { cursor: c.as_str() }).clone()
    }

    /// Log bytes a `drop_oldest` cursor skipped over its budget.
    pub fn cursor_dropped_bytes(&self, c: CursorName) -> u64 {
        self.cursor_dropped_bytes.get_or_create(&CursorLabels { cursor: c.as_str() }).get()
    }

    pub(crate) fn add_cursor_dropped_bytes(&self, c: CursorName, bytes: u64) {
        self.cursor_dropped_bytes.get_or_create(&CursorLabels { cursor: c.as_str() }).inc_by(bytes);
    }

    pub(crate) fn cursor_blocked(&self, c: CursorName) -> Counter {
        self.cursor_blocked.get_or_create(&CursorLabels { cursor: c.as_str() }).clone()
    }

    /// Corrupt bytes a cursor's reader skipped (readers outside a cursor count under `none`).
    pub fn cursor_skipped_bytes(&self, c: Option<CursorName>) -> u64 {
        self.cursor_skipped_bytes.get_or_create(&CursorLabels { cursor: c.map_or("none", CursorName::as_str) }).get()
    }

    pub(crate) fn add_cursor_skipped_bytes(&self, c: Option<CursorName>, bytes: u64) {
        self.cursor_skipped_bytes
            .get_or_create(&CursorLabels { cursor: c.map_or("none", CursorName::as_str) })
            .inc_by(bytes);
    }

    /// Corrupt stretches found so far.
    pub fn corrupt_regions(&self) -> u64 {
        self.corrupt_regions.get()
    }

    /// Records appended so far.
    pub fn appends(&self) -> u64 {
        self.appends.get()
    }

    /// fsync calls so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.get()
    }
}
