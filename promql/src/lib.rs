//! Yaffle's PromQL engine: one evaluator, with Prometheus 2.x semantics, over a small trait for
//! "the samples of the series these matchers select in this time range" ([`Source`]).
//!
//! A query runs in two phases: [`Query::selections`] says what every selector reads (matchers and a
//! time span, widened by ranges, offsets, `@`, subqueries and the lookback), the data is loaded
//! once ([`Query::load`] from a [`Source`]: the query API reads the store so; alerting hands over
//! its in-memory series directly), then evaluation walks the expression at each step over the
//! loaded samples, without I/O.
//!
//! Semantics follow Prometheus 2.42: an instant selector sees the latest sample in
//! `[t - lookback, t]` unless it is a staleness marker; a range selector `[r]` sees `[t - r, t]`
//! (both ends inclusive); `rate`, `increase` and `delta` extrapolate as Prometheus does; subquery
//! steps are aligned to multiples of the step; `@ start()`/`@ end()` are the query's start and end.
//!
//! | PromQL | here |
//! | --- | --- |
//! | selectors (`=`, `!=`, `=~`, `!~`), `offset`, `@` (with `start()`/`end()`), subqueries | yes |
//! | `rate irate increase delta idelta deriv predict_linear resets changes holt_winters` | yes |
//! | `avg/sum/min/max/count/last/present/quantile/stddev/stdvar/absent_over_time` | yes |
//! | `histogram_quantile` over classic `le` buckets | yes |
//! | `label_replace label_join sort sort_desc absent scalar vector time timestamp` | yes |
//! | `abs ceil floor exp sqrt ln log2 log10 sgn round clamp clamp_min clamp_max`, trigonometry, `deg rad pi` | yes |
//! | `day_of_month day_of_week day_of_year days_in_month hour minute month year` | yes |
//! | `sum avg min max count group stddev stdvar topk bottomk quantile count_values`, `by`/`without` | yes |
//! | arithmetic, comparisons (`bool`), `atan2`, `on`/`ignoring`, `group_left`/`group_right`, `and or unless` | yes |
//! | native histograms (`histogram_count/sum/fraction`), functions and aggregations newer than 2.42 (`limitk`, `sort_by_label`, `mad_over_time`, ...), `or` inside a selector, `fill()` | refused (`bad_data`) |

mod eval;
mod functions;
mod labels;
mod plan;
#[cfg(test)]
mod tests;
mod value;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use labels::{Labels, METRIC_NAME};
pub use plan::{Consumer, Kind, Selection, absent_labels};
pub use promql_parser::label::{MatchOp, Matcher};
/// A Prometheus duration (`5m`, `1h30m`, `100ms`, or float seconds).
pub use promql_parser::util::parse_duration;
pub use value::{STALE_NAN_BITS, Sample, Series, Value, format_value, is_stale};
pub use yaffle_core::Window;

pub use eval::valid_label_name;

use eval::Ctx;
use plan::{Node, Planner, spans};

/// Why a query failed, with Prometheus' `errorType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The query or a parameter is malformed (`bad_data`).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (`execution`).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its timeout (`timeout`).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The client went away (`canceled`).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
}

impl Error {
    /// Prometheus' `errorType` for the error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadData(_) => "bad_data",
            Error::Execution(_) => "execution",
            Error::Timeout(_) => "timeout",
            Error::Canceled(_) => "canceled",
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How far back an instant selector looks for a sample (Prometheus' `--query.lookback-delta`).
    pub lookback: Duration,
    /// Step of a subquery that names none (Prometheus' global evaluation interval).
    pub default_subquery_step: Duration,
    /// Samples a query may load and produce (Prometheus' `--query.max-samples`).
    pub max_samples: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lookback: Duration::from_secs(300),
            default_subquery_step: Duration::from_secs(60),
            max_samples: 50_000_000,
        }
    }
}

impl EngineConfig {
    pub(crate) fn lookback_ns(&self) -> i64 {
        i64::try_from(self.lookback.as_nanos()).unwrap_or(i64::MAX)
    }

    pub(crate) fn default_step_ns(&self) -> i64 {
        i64::try_from(self.default_subquery_step.as_nanos()).unwrap_or(i64::MAX).max(1)
    }
}

/// Where samples come from: the series whose labels the selection's matchers select, with their
/// samples in `[start_ns, end_ns]`, sorted by time.
pub trait Source {
    /// Loads one selection.
    fn select(&self, selection: &Selection) -> impl Future<Output = Result<Vec<Series>, Error>> + Send;
}

/// When a running query must stop: a deadline and a flag a dropped request sets.
#[derive(Debug, Default)]
pub struct Budget {
    /// Past this instant evaluation fails with [`Error::Timeout`].
    pub deadline: Option<Instant>,
    /// Once set, evaluation fails with [`Error::Canceled`].
    pub canceled: AtomicBool,
}

impl Budget {
    /// A budget ending `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self { deadline: Instant::now().checked_add(timeout), canceled: AtomicBool::new(false) }
    }

    pub(crate) fn check(&self, stage: &'static str) -> Result<(), Error> {
        if self.canceled.load(Ordering::Relaxed) {
            return Err(Error::Canceled(stage));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout(stage));
        }
        Ok(())
    }
}

fn too_many_samples() -> Error {
    Error::Execution("query processing would load too many samples into memory in query execution".into())
}

/// A parsed and checked query.
#[derive(Debug, Clone)]
pub struct Query {
    node: Node,
    kind: Kind,
    selectors: Vec<Vec<Matcher>>,
    consumers: Vec<plan::Consumer>,
}

impl Query {
    /// Parses `text` for evaluation between `start_ns` and `end_ns` (equal for an instant query),
    /// which `@ start()` and `@ end()` refer to.
    pub fn parse(text: &str, start_ns: i64, end_ns: i64) -> Result<Query, Error> {
        let expr = promql_parser::parser::parse(text).map_err(Error::BadData)?;
        let mut planner = Planner::new(start_ns, end_ns);
        let (node, kind) = planner.plan(&expr)?;
        Ok(Query { node, kind, selectors: planner.selectors, consumers: planner.consumers })
    }

    /// What the query evaluates to.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The matchers of each selector, in the order [`Query::selections`] lists them.
    pub fn selectors(&self) -> &[Vec<Matcher>] {
        &self.selectors
    }

    /// Whether a selector or subquery has an `@` modifier.
    pub fn uses_at(&self) -> bool {
        plan::uses_at(&self.node)
    }

    /// What each selector reads when the query is evaluated at every time in `[start, end]`.
    pub fn selections(&self, start_ns: i64, end_ns: i64, cfg: &EngineConfig) -> Vec<Selection> {
        let mut out = vec![(i64::MAX, i64::MIN); self.selectors.len()];
        spans(&self.node, start_ns, end_ns, cfg, &mut out);
        self.selectors
            .iter()
            .zip(&self.consumers)
            .zip(out)
            .map(|((m, &consumer), (start_ns, end_ns))| Selection { matchers: m.clone(), consumer, start_ns, end_ns })
            .collect()
    }

    /// Loads every selection from `source`, bounded by `cfg.max_samples`.
    pub async fn load(
        &self,
        source: &impl Source,
        start_ns: i64,
        end_ns: i64,
        cfg: &EngineConfig,
    ) -> Result<Vec<Vec<Series>>, Error> {
        let mut data = Vec::with_capacity(self.selectors.len());
        let mut samples = 0usize;
        for selection in self.selections(start_ns, end_ns, cfg) {
            let series = source.select(&selection).await?;
            samples = samples.saturating_add(series.iter().map(|s| s.samples.len()).sum());
            if samples > cfg.max_samples {
                return Err(too_many_samples());
            }
            data.push(series);
        }
        Ok(data)
    }

    /// Evaluates at one instant over loaded data.
    pub fn instant(
        &self,
        data: &[Vec<Series>],
        t_ns: i64,
        cfg: &EngineConfig,
        budget: &Budget,
    ) -> Result<Value, Error> {
        let ctx = Ctx { data, cfg, budget };
        ctx.eval(&self.node, t_ns)
    }

    /// Evaluates at every step from `start` to `end` over loaded data: one series per label set,
    /// sorted by labels, each with its points at step times.
    pub fn range(
        &self,
        data: &[Vec<Series>],
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
        cfg: &EngineConfig,
        budget: &Budget,
    ) -> Result<Vec<Series>, Error> {
        if !matches!(self.kind, Kind::Scalar | Kind::Vector) {
            return Err(Error::BadData(format!(
                "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                match self.kind {
                    Kind::Matrix => "range vector",
                    _ => "string",
                }
            )));
        }
        let ctx = Ctx { data, cfg, budget };
        let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut points = 0usize;
        let mut t = start_ns;
        while t <= end_ns {
            budget.check("query evaluation")?;
            let samples = match ctx.eval(&self.node, t)? {
                Value::Scalar(v) => vec![Sample { labels: Labels::default(), value: v }],
                Value::Vector(v) => v,
                _ => Vec::new(),
            };
            points += samples.len();
            if points > cfg.max_samples {
                return Err(too_many_samples());
            }
            for s in samples {
                match series.entry(s.labels) {
                    Entry::Occupied(mut e) => e.get_mut().push((t, s.value)),
                    Entry::Vacant(e) => {
                        e.insert(vec![(t, s.value)]);
                    }
                }
            }
            t = match t.checked_add(step_ns) {
                Some(next) => next,
                None => break,
            };
        }
        let mut out: Vec<Series> = series.into_iter().map(|(labels, samples)| Series::raw(labels, samples)).collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}
