//! The evaluator: points in, rule evaluations on event time, alerts out.
//!
//! It is synchronous and owns all alerting state; [`crate::service`] drives it from the network or the
//! local log, a tick and reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use yaffle_core::Point;
use yaffle_core::remote_write::{Label, Sample as RemoteSample, TimeSeries};
use yaffle_promql::{METRIC_NAME, Value};

use crate::alerting::{AlertState, EvalContext, External, RuleState};
use crate::config::AlertConfig;
use crate::labels::Labels;
use crate::metrics::{Metrics, PointLabels, StateLabels};
use crate::notifier::Notification;
use crate::rules::{RecordRule, RuleSet};
use crate::series::{IngestStats, SeriesStore};

/// Every group's rule states, the series they read and the event-time clock.
#[derive(Debug)]
pub struct Evaluator {
    rules: Arc<RuleSet>,
    /// `states[g][r]` is rule `r` of group `g`.
    states: Vec<Vec<RuleState>>,
    store: SeriesStore,
    /// Event time (ns): the latest point timestamp seen, or that plus the wall time since it when the
    /// stream is idle.
    clock: i64,
    /// Wall clock and event clock at the last point.
    last_point: Option<(Instant, i64)>,
    lookback_ns: i64,
    max_future_ns: i64,
    tick: Duration,
    resend: Duration,
    external: External,
    metrics: Arc<Metrics>,
    /// Per group, the next evaluation time of its recording rules (`i64::MIN`: not scheduled yet).
    record_next: Vec<i64>,
    /// Recording rule results not yet taken by [`Evaluator::take_recorded`].
    recorded: Vec<TimeSeries>,
}

impl Evaluator {
    /// An evaluator for `rules` with no series and no alerts.
    pub fn new(rules: Arc<RuleSet>, config: &AlertConfig, metrics: Arc<Metrics>) -> Self {
        let external = External {
            labels: Labels::from_pairs(config.external_labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            url: config.external_url.clone(),
        };
        let store = SeriesStore::new(rules.selectors.matchers.clone(), config.max_series);
        let states = rules.groups.iter().map(|g| g.rules.iter().cloned().map(RuleState::new).collect()).collect();
        metrics.rules.set(rules.rule_count() as i64);
        let record_next = vec![i64::MIN; rules.groups.len()];
        Self {
            record_next,
            recorded: Vec::new(),
            rules,
            states,
            store,
            clock: i64::MIN,
            last_point: None,
            lookback_ns: config.lookback.as_nanos() as i64,
            max_future_ns: config.max_future.as_nanos() as i64,
            tick: config.tick,
            resend: config.resend_delay,
            external,
            metrics,
        }
    }

    /// Replaces the rules. Rules whose definition did not change keep their alerts; the series of
    /// selectors still in use keep their samples.
    pub fn reload(&mut self, rules: Arc<RuleSet>) {
        let mut old: HashMap<String, RuleState> = HashMap::new();
        for state in self.states.drain(..).flatten() {
            old.insert(state.rule.key.clone(), state);
        }
        self.states = rules
            .groups
            .iter()
            .map(|g| {
                g.rules
                    .iter()
                    .map(|r| match old.remove(&r.key) {
                        Some(mut s) => {
                            s.rule = Arc::clone(r);
                            s
                        }
                        None => RuleState::new(Arc::clone(r)),
                    })
                    .collect()
            })
            .collect();
        self.store.set_selectors(rules.selectors.matchers.clone());
        self.record_next = vec![i64::MIN; rules.groups.len()];
        self.metrics.rules.set(rules.rule_count() as i64);
        self.rules = rules;
    }

    /// The loaded rules.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The rule states, by group.
    pub fn states(&self) -> &[Vec<RuleState>] {
        &self.states
    }

    /// The event-time clock (ns), `None` before the first point.
    pub fn clock(&self) -> Option<i64> {
        (self.clock != i64::MIN).then_some(self.clock)
    }

    /// How much history rebuilds the whole state: a replay of the points of this long before the
    /// last one seen reproduces every alert, pending or firing, and every range a rule reads.
    pub fn horizon(&self) -> Duration {
        let reads = Duration::from_nanos(self.lookback_ns.saturating_add(self.rules.max_history_ns()) as u64);
        reads + self.rules.max_hold()
    }

    /// Moves the event clock to `at` if it is behind (a watermark from a source that knows no earlier
    /// point will come, or a test stepping time).
    pub fn advance_to(&mut self, at: i64) {
        self.clock = self.clock.max(at);
    }

    /// Adds points and evaluates the rules they touch. Points spanning more than a tick of event time
    /// (a replay, a backlog) are taken in time order a tick at a time with every rule evaluated after
    /// each step, so `for` and `activeAt` come out as they would have live.
    pub fn ingest_and_evaluate(&mut self, mut points: Vec<Point>) -> Vec<Notification> {
        let tick_ns = self.tick.as_nanos() as i64;
        let (min, max) =
            points.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| (lo.min(p.timestamp), hi.max(p.timestamp)));
        if max.saturating_sub(min) <= tick_ns {
            self.ingest(&points);
            return self.evaluate(false);
        }
        points.sort_by_key(|p| p.timestamp);
        let mut out = Vec::new();
        let mut start = 0;
        while start < points.len() {
            let boundary = points[start].timestamp.saturating_add(tick_ns);
            let end = start + points[start..].partition_point(|p| p.timestamp < boundary);
            self.ingest(&points[start..end]);
            out.extend(self.evaluate(true));
            start = end;
        }
        out
    }

    /// Adds points. Points from beyond the wall clock plus `max_future` are dropped.
    pub fn ingest(&mut self, points: &[Point]) {
        let wall = wall_ns();
        let floor = self.floor();
        let mut stats = IngestStats::default();
        let mut future = 0u64;
        for p in points {
            if p.timestamp > wall.saturating_add(self.max_future_ns) {
                future += 1;
                continue;
            }
            self.store.ingest(p, floor, &mut stats);
            self.clock = self.clock.max(p.timestamp);
        }
        if !points.is_empty() {
            self.last_point = Some((Instant::now(), self.clock));
        }
        let count = |outcome, n| self.metrics.samples.get_or_create(&PointLabels { outcome }).inc_by(n);
        count("stored", stats.stored - stats.out_of_order);
        count("out_of_order", stats.out_of_order);
        count("ignored", stats.ignored);
        count("dropped", stats.dropped);
        count("future", future);
    }

    /// Oldest sample any rule can still read.
    fn floor(&self) -> i64 {
        if self.clock == i64::MIN {
            return i64::MIN;
        }
        self.clock.saturating_sub(self.lookback_ns.saturating_add(self.rules.max_history_ns()))
    }

    /// Evaluates the rules that read series which received points since the last evaluation (every
    /// rule when `all`), at the clock, and returns the alerts due to be sent.
    pub fn evaluate(&mut self, all: bool) -> Vec<Notification> {
        if self.clock == i64::MIN {
            return Vec::new();
        }
        let started = Instant::now();
        let dirty = self.store.take_dirty();
        let at = self.clock;
        let ctx = EvalContext { store: &self.store, lookback_ns: self.lookback_ns, external: &self.external };
        for (g, group) in self.rules.groups.iter().enumerate() {
            for state in &mut self.states[g] {
                if !all && !state.rule.selectors.iter().any(|&s| dirty[s]) {
                    continue;
                }
                self.metrics.evaluations.inc();
                if let Err(e) = state.evaluate(group, at, &ctx) {
                    self.metrics.evaluation_failures.inc();
                    tracing::warn!(group = %group.name, rule = %state.rule.name, error = %e, "rule evaluation failed");
                }
            }
        }
        self.record(at);
        self.metrics.evaluation_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.event_time_seconds.set(at as f64 / 1e9);
        self.due()
    }

    /// Evaluates each group's recording rules at every multiple of its interval the clock has
    /// passed. Times more than two intervals behind the wall clock are skipped: they are a replay
    /// of history whose results the previous run already wrote.
    fn record(&mut self, at: i64) {
        let wall = wall_ns();
        let Self { rules, record_next, recorded, metrics, store, lookback_ns, .. } = self;
        for (g, group) in rules.groups.iter().enumerate() {
            if group.records.is_empty() {
                continue;
            }
            let interval = i64::try_from(group.interval.as_nanos()).unwrap_or(i64::MAX).max(1);
            let next = &mut record_next[g];
            if *next == i64::MIN {
                *next = (at.div_euclid(interval) + 1).saturating_mul(interval);
                continue;
            }
            let live_from = wall.saturating_sub(interval.saturating_mul(2));
            if *next < live_from {
                let skipped = (live_from - *next).div_euclid(interval) + 1;
                metrics.recorded.get_or_create(&PointLabels { outcome: "skipped" }).inc_by(skipped as u64);
                *next = next.saturating_add(skipped.saturating_mul(interval));
            }
            while *next <= at {
                let t = *next;
                *next = t.saturating_add(interval);
                for rule in &group.records {
                    metrics.evaluations.inc();
                    match crate::expr::evaluate(&rule.compiled, store, t, *lookback_ns) {
                        Ok(value) => recorded.extend(results(rule, value, t)),
                        Err(e) => {
                            metrics.evaluation_failures.inc();
                            tracing::warn!(group = %group.name, rule = %rule.name, error = %e, "recording rule evaluation failed");
                        }
                    }
                }
            }
        }
    }

    /// Recording rule results since the last call, as remote_write series.
    pub fn take_recorded(&mut self) -> Vec<TimeSeries> {
        std::mem::take(&mut self.recorded)
    }

    /// The periodic step: moves the clock on by the wall time since the last point when no point came
    /// for a tick, forgets what no rule can read any more, evaluates every rule.
    pub fn tick(&mut self) -> Vec<Notification> {
        if let Some((wall, event)) = self.last_point
            && wall.elapsed() >= self.tick
        {
            let idle_ns = wall.elapsed().as_nanos() as i64;
            self.clock = self.clock.max(event.saturating_add(idle_ns));
        }
        self.store.expire(self.floor());
        self.metrics.series.set(self.store.len() as i64);
        self.metrics.retained_samples.set(self.store.samples() as i64);
        let out = self.evaluate(true);
        let mut counts = [0i64; 3];
        for a in self.states.iter().flatten().flat_map(|s| s.active.values()) {
            counts[a.state as usize] += 1;
        }
        for state in [AlertState::Inactive, AlertState::Pending, AlertState::Firing] {
            self.metrics.alerts.get_or_create(&StateLabels { state: state.as_str() }).set(counts[state as usize]);
        }
        out
    }

    /// Collects the alerts due to be sent and marks them sent.
    fn due(&mut self) -> Vec<Notification> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut out = Vec::new();
        for (g, group) in self.rules.groups.iter().enumerate() {
            let valid_for = 4 * self.resend.max(group.interval);
            for state in &mut self.states[g] {
                for a in state.active.values_mut() {
                    if !a.needs_sending(now, self.resend) {
                        continue;
                    }
                    let mut labels: Vec<(Arc<str>, Arc<str>)> = self.external.labels.pairs().to_vec();
                    labels.extend(a.labels.pairs().iter().cloned());
                    let starts_at = from_ns(a.fired_at.unwrap_or(a.active_at));
                    let ends_at = match a.resolved_at {
                        Some(r) if a.state == AlertState::Inactive => from_ns(r).min(wall).max(starts_at),
                        _ => wall + valid_for,
                    };
                    out.push(Notification {
                        labels: Labels::new(labels),
                        annotations: a.annotations.clone(),
                        starts_at,
                        ends_at,
                        generator_url: self.external.url.clone(),
                    });
                    a.last_sent = Some(now);
                    if a.state == AlertState::Inactive {
                        a.resolved_sent = true;
                    }
                }
            }
        }
        out
    }
}

/// A recording rule's results at `t`: each element named `rule.name`, with the rule's labels.
fn results(rule: &RecordRule, value: Value, t: i64) -> Vec<TimeSeries> {
    let samples = match value {
        Value::Vector(v) => v,
        Value::Scalar(v) => vec![yaffle_promql::Sample { labels: Labels::default(), value: v }],
        _ => Vec::new(),
    };
    let label = |k: &str, v: &str| Label {
        name: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    };
    samples
        .into_iter()
        .map(|s| {
            let mut pairs: Vec<(Arc<str>, Arc<str>)> = s.labels.pairs().to_vec();
            pairs.extend(rule.labels.iter().map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str()))));
            pairs.push((Arc::from(METRIC_NAME), Arc::from(rule.name.as_str())));
            let labels = Labels::new(pairs);
            TimeSeries {
                labels: labels.iter().map(|(k, v)| label(k, v)).collect(),
                samples: vec![RemoteSample { value: s.value, timestamp: t.div_euclid(1_000_000) }],
            }
        })
        .collect()
}

fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 { UNIX_EPOCH + Duration::from_nanos(ns as u64) } else { UNIX_EPOCH }
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn wall_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use yaffle_core::point::FieldValue;
    use yaffle_core::{Point, SeriesKey};

    use super::*;
    use crate::AlertConfig;
    use crate::alerting::AlertState;

    /// A replay arriving in one push: `for` and `activeAt` come out as they did live.
    #[test]
    fn a_replayed_backlog_rebuilds_alerts_as_they_were_live() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yml");
        std::fs::write(
            &file,
            "groups:\n  - name: g\n    rules:\n      - alert: Hot\n        expr: max by (host) (temp_celsius) > 50\n        for: 2s\n",
        )
        .unwrap();
        let rules = Arc::new(RuleSet::load(&[file], Duration::from_secs(60)).unwrap());
        let config = AlertConfig { tick: Duration::from_millis(200), ..AlertConfig::default() };
        let mut evaluator = Evaluator::new(rules, &config, Arc::new(Metrics::new(&mut Registry::default())));
        let start = wall_ns() - 5_000_000_000;
        let key = Arc::new(SeriesKey::new("db", "temp", vec![("host".into(), "oven".into())]));
        let points: Vec<Point> = (0..20)
            .map(|i| {
                Point::new(Arc::clone(&key), vec![("celsius".into(), FieldValue::Float(61.0))], start + i * 200_000_000)
            })
            .collect();
        evaluator.ingest_and_evaluate(points);
        let alert = evaluator.states()[0][0].active.values().next().expect("an alert").clone();
        assert_eq!(alert.state, AlertState::Firing);
        assert_eq!(alert.active_at, start);
    }
}

#[cfg(test)]
mod recording_tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use yaffle_core::point::FieldValue;
    use yaffle_core::{Point, SeriesKey};

    use super::*;
    use crate::AlertConfig;

    /// Recording rules run at each multiple of their group's interval the event clock passes, and
    /// their results are named after the rule, with its labels.
    #[test]
    fn recording_rules_record_at_each_interval_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yml");
        std::fs::write(
            &file,
            "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: host:temp:max\n        expr: max by (host) (temp_celsius)\n        labels:\n          source: rule\n",
        )
        .unwrap();
        let rules = Arc::new(RuleSet::load(&[file], Duration::from_secs(60)).unwrap());
        let mut evaluator =
            Evaluator::new(rules, &AlertConfig::default(), Arc::new(Metrics::new(&mut Registry::default())));
        // Live: the first boundary is a second before the wall clock (older ones are a replay).
        let start = (wall_ns() / 1_000_000_000 - 2) * 1_000_000_000 + 500_000_000;
        let key = Arc::new(SeriesKey::new("db", "temp", vec![("host".into(), "oven".into())]));
        let points: Vec<Point> = (0..10)
            .map(|i| {
                Point::new(
                    Arc::clone(&key),
                    vec![("celsius".into(), FieldValue::Float(i as f64))],
                    start + i * 400_000_000,
                )
            })
            .collect();
        for p in points {
            evaluator.ingest_and_evaluate(vec![p]);
        }
        let recorded = evaluator.take_recorded();
        // The clock went from start to start + 3.6 s: boundaries start + 0.5 s .. start + 3.5 s.
        let times: Vec<i64> = recorded.iter().map(|s| s.samples[0].timestamp).collect();
        let first = (start + 500_000_000) / 1_000_000;
        assert_eq!(times, vec![first, first + 1000, first + 2000, first + 3000], "{recorded:?}");
        let labels: Vec<(String, String)> = recorded[0]
            .labels
            .iter()
            .map(|l| (String::from_utf8(l.name.to_vec()).unwrap(), String::from_utf8(l.value.to_vec()).unwrap()))
            .collect();
        assert_eq!(
            labels,
            [("__name__", "host:temp:max"), ("host", "oven"), ("source", "rule")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // The value at start + 1.5 s is the point at start + 1.2 s (the third, 3).
        assert_eq!(recorded[1].samples[0].value, 3.0);
        assert!(evaluator.take_recorded().is_empty());
    }
}
