//! Evaluator metrics, `yaffle_alert_*`, registered on an injected registry so tests can read them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReceiverLabels {
    pub(crate) receiver: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PointLabels {
    pub(crate) outcome: &'static str,
}

/// Every evaluator metric.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) samples: Family<PointLabels, Counter>,
    pub(crate) series: Gauge,
    pub(crate) retained_samples: Gauge,
    pub(crate) alerts: Family<StateLabels, Gauge>,
    pub(crate) evaluations: Counter,
    pub(crate) evaluation_failures: Counter,
    pub(crate) evaluation_seconds: Histogram,
    pub(crate) event_time_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) rules: Gauge,
    pub(crate) reloads: Counter,
    pub(crate) reload_failures: Counter,
    pub(crate) last_reload_successful: Gauge,
    pub(crate) notifications: Family<ReceiverLabels, Counter>,
    pub(crate) notification_errors: Family<ReceiverLabels, Counter>,
    pub(crate) notifications_dropped: Family<ReceiverLabels, Counter>,
    pub(crate) notification_queue: Family<ReceiverLabels, Gauge>,
    pub(crate) recorded: Family<PointLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them under `yaffle_alert_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            samples: Family::default(),
            series: Gauge::default(),
            retained_samples: Gauge::default(),
            alerts: Family::default(),
            evaluations: Counter::default(),
            evaluation_failures: Counter::default(),
            evaluation_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            event_time_seconds: Gauge::default(),
            rules: Gauge::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            last_reload_successful: Gauge::default(),
            notifications: Family::default(),
            notification_errors: Family::default(),
            notifications_dropped: Family::default(),
            notification_queue: Family::default(),
            recorded: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("yaffle_alert");
        r.register(
            "samples",
            "Samples received, by outcome (stored, ignored, out_of_order, dropped, future)",
            m.samples.clone(),
        );
        r.register("series", "Series held for rules", m.series.clone());
        r.register("retained_samples", "Samples held for rules", m.retained_samples.clone());
        r.register("alerts", "Alerts by state", m.alerts.clone());
        r.register("rule_evaluations", "Rule evaluations", m.evaluations.clone());
        r.register("rule_evaluation_failures", "Rule evaluations that failed", m.evaluation_failures.clone());
        r.register("evaluation_seconds", "Time to evaluate the due rules once", m.evaluation_seconds.clone());
        r.register("event_time_seconds", "The evaluator's event-time clock", m.event_time_seconds.clone());
        r.register("rules", "Rules loaded", m.rules.clone());
        r.register("reloads", "Rule reloads attempted", m.reloads.clone());
        r.register("reload_failures", "Rule reloads that failed (the previous rules stay)", m.reload_failures.clone());
        r.register("last_reload_successful", "Whether the last reload succeeded", m.last_reload_successful.clone());
        r.register("notifications", "Alerts sent, by receiver", m.notifications.clone());
        r.register(
            "notification_errors",
            "Notification requests that failed, by receiver",
            m.notification_errors.clone(),
        );
        r.register(
            "notifications_dropped",
            "Alerts dropped from a full queue, by receiver",
            m.notifications_dropped.clone(),
        );
        r.register("notification_queue", "Alerts waiting to be sent, by receiver", m.notification_queue.clone());
        r.register(
            "recorded_samples",
            "Recording rule results: written (through ingest), failed (ingest refused or unreachable), skipped (times a replay covers)",
            m.recorded.clone(),
        );
        m
    }
}
