//! One alerting rule's state machine, as Prometheus runs it: an element of the expression's result is
//! an alert, `pending` from the instant it first appears, `firing` once it has been there for `for`,
//! and `inactive` (resolved) when it is gone, after `keep_firing_for`. Resolved alerts are kept for
//! 15 minutes so Alertmanager keeps hearing they are resolved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::expr::{self, Value};
use crate::labels::Labels;
use crate::rules::{AlertRule, Group};
use crate::series::SeriesStore;
use crate::template::TemplateData;

/// How long a resolved alert is still reported (Prometheus' `resolvedRetention`).
const RESOLVED_RETENTION_NS: i64 = 15 * 60 * 1_000_000_000;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// Resolved.
    Inactive,
    /// Active for less than `for`.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl AlertState {
    /// The name used by the Prometheus API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule. Times are event time, nanoseconds.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Labels: the element's labels without `__name__`, the rule's labels, `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: Labels,
    /// State.
    pub state: AlertState,
    /// The element's value at the last evaluation that saw it.
    pub value: f64,
    /// When it became pending.
    pub active_at: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// When it was resolved.
    pub resolved_at: Option<i64>,
    keep_firing_since: Option<i64>,
    /// When it was last sent to Alertmanager (wall clock).
    pub(crate) last_sent: Option<Instant>,
    /// Whether a resolved alert was sent since it resolved.
    pub(crate) resolved_sent: bool,
}

impl Alert {
    /// Whether this alert is due to be sent (Prometheus' rule): never while pending; as soon as it
    /// resolves; otherwise when it was not sent for `resend`, so Alertmanager keeps hearing of firing
    /// alerts and, for the resolved retention, of resolved ones.
    pub(crate) fn needs_sending(&self, now: Instant, resend: Duration) -> bool {
        match self.state {
            AlertState::Pending => false,
            AlertState::Inactive if !self.resolved_sent => true,
            _ => self.last_sent.is_none_or(|t| now.duration_since(t) >= resend),
        }
    }
}

/// Health of a rule's last evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Evaluated without error.
    Ok,
    /// Failed, with the error.
    Err(String),
}

/// A rule and its alerts.
#[derive(Debug)]
pub struct RuleState {
    /// The rule.
    pub rule: Arc<AlertRule>,
    /// Its alerts, by label fingerprint.
    pub active: HashMap<u64, Alert>,
    /// Last evaluation's health.
    pub health: Health,
    /// Event time of the last evaluation (ns).
    pub last_evaluation: Option<i64>,
    /// How long the last evaluation took.
    pub evaluation_time: Duration,
}

/// Labels and URL added to every alert.
#[derive(Debug, Clone, Default)]
pub struct External {
    /// External labels.
    pub labels: Labels,
    /// External URL.
    pub url: String,
}

/// What every rule evaluation reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EvalContext<'a> {
    pub(crate) store: &'a SeriesStore,
    pub(crate) lookback_ns: i64,
    pub(crate) external: &'a External,
}

impl RuleState {
    /// A rule with no alerts yet.
    pub fn new(rule: Arc<AlertRule>) -> Self {
        Self {
            rule,
            active: HashMap::new(),
            health: Health::Unknown,
            last_evaluation: None,
            evaluation_time: Duration::ZERO,
        }
    }

    /// Evaluates the rule at event time `at` and moves its alerts through their states.
    pub(crate) fn evaluate(&mut self, group: &Group, at: i64, ctx: &EvalContext<'_>) -> Result<(), String> {
        let started = Instant::now();
        let result = self.step(group, at, ctx);
        self.evaluation_time = started.elapsed();
        self.last_evaluation = Some(at);
        self.health = match &result {
            Ok(()) => Health::Ok,
            Err(e) => Health::Err(e.clone()),
        };
        result
    }

    fn step(&mut self, group: &Group, at: i64, ctx: &EvalContext<'_>) -> Result<(), String> {
        let rule = Arc::clone(&self.rule);
        let external = ctx.external;
        let samples = match expr::evaluate(&rule.compiled, ctx.store, at, ctx.lookback_ns)? {
            Value::Vector(v) => v,
            _ => return Err("expression yielded no instant vector".into()),
        };
        let mut seen = HashMap::with_capacity(samples.len());
        for s in samples {
            let element = s.labels.without_name();
            let data = TemplateData {
                labels: &s.labels,
                value: s.value,
                external_labels: &external.labels,
                external_url: &external.url,
            };
            let mut pairs: Vec<(Arc<str>, Arc<str>)> = element.pairs().to_vec();
            for (k, t) in &rule.labels {
                pairs.push((Arc::from(k.as_str()), Arc::from(t.expand(data))));
            }
            pairs.push((Arc::from("alertname"), Arc::from(rule.name.as_str())));
            let labels = Labels::new(pairs);
            let annotations = Labels::new(
                rule.annotations.iter().map(|(k, t)| (Arc::from(k.as_str()), Arc::from(t.expand(data)))).collect(),
            );
            let fp = labels.fingerprint();
            if seen.insert(fp, ()).is_some() {
                return Err(format!("two elements have the same labels {labels} once the rule's labels are applied"));
            }
            match self.active.get_mut(&fp) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = s.value;
                    a.annotations = annotations;
                    a.keep_firing_since = None;
                }
                _ => {
                    self.active.insert(
                        fp,
                        Alert {
                            labels,
                            annotations,
                            state: AlertState::Pending,
                            value: s.value,
                            active_at: at,
                            fired_at: None,
                            resolved_at: None,
                            keep_firing_since: None,
                            last_sent: None,
                            resolved_sent: false,
                        },
                    );
                }
            }
        }
        let for_ns = rule.for_.as_nanos() as i64;
        let keep_ns = rule.keep_firing_for.as_nanos() as i64;
        self.active.retain(|fp, a| {
            if !seen.contains_key(fp) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_ns > 0 {
                    let since = *a.keep_firing_since.get_or_insert(at);
                    keep_firing = at - since < keep_ns;
                }
                if !keep_firing {
                    if a.state == AlertState::Pending || a.resolved_at.is_some_and(|r| at - r > RESOLVED_RETENTION_NS) {
                        return false;
                    }
                    if a.state != AlertState::Inactive {
                        a.state = AlertState::Inactive;
                        a.resolved_at = Some(at);
                        a.resolved_sent = false;
                    }
                    return true;
                }
            }
            if a.state == AlertState::Pending && at - a.active_at >= for_ns {
                a.state = AlertState::Firing;
                a.fired_at = Some(at);
            }
            true
        });
        let live = self.active.values().filter(|a| a.state != AlertState::Inactive).count();
        if group.limit > 0 && live > group.limit {
            self.active.clear();
            return Err(format!("exceeded the group's limit of {} alerts with {live}", group.limit));
        }
        Ok(())
    }
}
