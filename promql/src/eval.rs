//! Evaluating the plan at one instant, with Prometheus 2.x semantics: closed windows `[t - range, t]`,
//! lookback for instant selectors, staleness markers, label handling, vector matching.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::functions::{self, Func, bucket_quantile, go_max, go_min};
use crate::labels::{Labels, METRIC_NAME};
use crate::plan::{AggOp, BinOp, Card, Grouping, Node};
use crate::value::{Sample, Series, Value, format_value, is_stale};
use crate::{Budget, EngineConfig, Error};

/// What evaluation reads: the loaded series of each selection, and the query's settings.
pub(crate) struct Ctx<'a> {
    pub(crate) data: &'a [Vec<Series>],
    pub(crate) cfg: &'a EngineConfig,
    pub(crate) budget: &'a Budget,
}

fn duplicate_labelset() -> Error {
    Error::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Fails when two elements of a vector share a label set (after a function dropped names).
fn check_unique(v: &[Sample]) -> Result<(), Error> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for s in v {
        if !seen.insert(&s.labels) {
            return Err(duplicate_labelset());
        }
    }
    Ok(())
}

impl Ctx<'_> {
    pub(crate) fn eval(&self, node: &Node, t: i64) -> Result<Value, Error> {
        Ok(match node {
            Node::Number(v) => Value::Scalar(*v),
            Node::String(s) => Value::String(s.clone()),
            Node::Instant { selection, anchor } => {
                let refer = anchor.reference(t);
                let mut out = Vec::new();
                for s in &self.data[*selection] {
                    if let Some((_, v)) = self.latest(s, refer) {
                        out.push(Sample { labels: s.labels.clone(), value: v });
                    }
                }
                Value::Vector(out)
            }
            Node::Matrix { .. } | Node::Subquery { .. } => Value::Matrix(self.matrix(node, t)?.0),
            Node::Neg(inner) => match self.eval(inner, t)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(v) => {
                    let out: Vec<Sample> =
                        v.into_iter().map(|s| Sample { labels: s.labels.without_name(), value: -s.value }).collect();
                    check_unique(&out)?;
                    Value::Vector(out)
                }
                other => other,
            },
            Node::Call { func, args, absent_labels } => self.call(*func, args, absent_labels, t)?,
            Node::Aggregate { op, expr, param, grouping } => {
                let param = match param {
                    Some(p) => Some(self.eval(p, t)?),
                    None => None,
                };
                Value::Vector(aggregate(*op, self.eval(expr, t)?.into_vector(), param, grouping)?)
            }
            Node::Binary { op, lhs, rhs, return_bool, matching, card, include } => {
                let (l, r) = (self.eval(lhs, t)?, self.eval(rhs, t)?);
                binary(*op, l, r, *return_bool, matching, *card, include)?
            }
        })
    }

    /// The latest sample at or before `refer` within the lookback, unless it is a staleness marker.
    /// From rollups: the latest of the windows' first and last samples.
    fn latest(&self, s: &Series, refer: i64) -> Option<(i64, f64)> {
        let (ts, v) = if s.windows.is_empty() {
            let end = s.samples.partition_point(|&(ts, _)| ts <= refer);
            *s.samples.get(end.checked_sub(1)?)?
        } else {
            let end = s.windows.partition_point(|w| w.start_ns <= refer);
            let w = &s.windows.get(end.checked_sub(1)?)?.aggregate;
            if w.last.0 <= refer {
                w.last
            } else if w.first.0 <= refer {
                w.first
            } else {
                s.windows.get(end.checked_sub(2)?)?.aggregate.last
            }
        };
        if ts < refer.saturating_sub(self.cfg.lookback_ns()) || is_stale(v) {
            return None;
        }
        Some((ts, v))
    }

    /// A range selector or subquery at `t`: the series with their samples in the window (staleness
    /// markers dropped, series without samples left out), and the window's bounds.
    fn matrix(&self, node: &Node, t: i64) -> Result<(Vec<Series>, i64, i64), Error> {
        match node {
            Node::Matrix { selection, range_ns, anchor, .. } => {
                let end = anchor.reference(t);
                let start = end - range_ns;
                let mut out = Vec::new();
                for s in &self.data[*selection] {
                    if !s.windows.is_empty() {
                        let windows = windows_in(&s.windows, start, end);
                        if !windows.is_empty() {
                            out.push(Series { labels: s.labels.clone(), samples: Vec::new(), windows });
                        }
                        continue;
                    }
                    let samples: Vec<(i64, f64)> =
                        s.range(start, end).iter().copied().filter(|&(_, v)| !is_stale(v)).collect();
                    if !samples.is_empty() {
                        out.push(Series::raw(s.labels.clone(), samples));
                    }
                }
                Ok((out, start, end))
            }
            Node::Subquery { expr, range_ns, step_ns, anchor } => {
                let end = anchor.reference(t);
                let start = end - range_ns;
                let step = step_ns.unwrap_or(self.cfg.default_step_ns());
                // The first multiple of the step at or after the window's start.
                let mut ts = start.div_euclid(step) * step;
                if ts < start {
                    ts += step;
                }
                let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
                let mut order = Vec::new();
                while ts <= end {
                    self.budget.check("subquery evaluation")?;
                    let value = self.eval(expr, ts)?;
                    let samples = match value {
                        Value::Scalar(v) => vec![Sample { labels: Labels::default(), value: v }],
                        Value::Vector(v) => v,
                        _ => Vec::new(),
                    };
                    for s in samples {
                        match series.entry(s.labels) {
                            Entry::Occupied(mut e) => e.get_mut().push((ts, s.value)),
                            Entry::Vacant(e) => {
                                order.push(e.key().clone());
                                e.insert(vec![(ts, s.value)]);
                            }
                        }
                    }
                    ts += step;
                }
                let out = order
                    .into_iter()
                    .map(|labels| {
                        let samples = series.remove(&labels).unwrap_or_default();
                        Series::raw(labels, samples)
                    })
                    .collect();
                Ok((out, start, end))
            }
            _ => Err(Error::Execution("expected a range vector".into())),
        }
    }

    fn scalar_arg(&self, args: &[Node], i: usize, t: i64) -> Result<f64, Error> {
        Ok(match args.get(i) {
            Some(a) => self.eval(a, t)?.scalar(),
            None => f64::NAN,
        })
    }

    fn string_arg(&self, args: &[Node], i: usize) -> Result<String, Error> {
        match args.get(i) {
            Some(Node::String(s)) => Ok(s.clone()),
            _ => Err(Error::BadData(format!("argument {} must be a string literal", i + 1))),
        }
    }

    fn call(&self, func: Func, args: &[Node], absent_labels: &Labels, t: i64) -> Result<Value, Error> {
        if let Some(m) = func.matrix_arg() {
            let mut params = Vec::new();
            for (i, _) in args.iter().enumerate().filter(|&(i, _)| i != m) {
                params.push(self.scalar_arg(args, i, t)?);
            }
            let (series, start, end) = self.matrix(&args[m], t)?;
            if func == Func::AbsentOverTime {
                return Ok(Value::Vector(if series.is_empty() {
                    vec![Sample { labels: absent_labels.clone(), value: 1.0 }]
                } else {
                    Vec::new()
                }));
            }
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                let value = if s.windows.is_empty() {
                    functions::over_time(func, &s.samples, start, end, t, &params)?
                } else if let Some(v) = functions::over_windows(func, &s.windows) {
                    Some(v)
                } else {
                    // Functions rollups cannot answer see the windows' first and last samples.
                    let samples: Vec<(i64, f64)> = s
                        .window_samples()
                        .into_iter()
                        .filter(|&(ts, v)| ts >= start && ts <= end && !is_stale(v))
                        .collect();
                    if samples.is_empty() {
                        None
                    } else {
                        functions::over_time(func, &samples, start, end, t, &params)?
                    }
                };
                if let Some(value) = value {
                    let labels = if func == Func::LastOverTime { s.labels } else { s.labels.without_name() };
                    out.push(Sample { labels, value });
                }
            }
            check_unique(&out)?;
            return Ok(Value::Vector(out));
        }
        let vector_arg = |i: usize| -> Result<Vec<Sample>, Error> {
            match args.get(i) {
                Some(a) => Ok(self.eval(a, t)?.into_vector()),
                None => Ok(Vec::new()),
            }
        };
        let map = |v: Vec<Sample>, f: &dyn Fn(f64) -> f64| -> Result<Value, Error> {
            let out: Vec<Sample> =
                v.into_iter().map(|s| Sample { labels: s.labels.without_name(), value: f(s.value) }).collect();
            check_unique(&out)?;
            Ok(Value::Vector(out))
        };
        let t_seconds = t as f64 / 1e9;
        Ok(match func {
            Func::Time => Value::Scalar(t_seconds),
            Func::Pi => Value::Scalar(std::f64::consts::PI),
            Func::Math(f) => map(vector_arg(0)?, &|v| f.apply(v))?,
            Func::Round => {
                let to_nearest = if args.len() > 1 { self.scalar_arg(args, 1, t)? } else { 1.0 };
                let inverse = 1.0 / to_nearest;
                map(vector_arg(0)?, &|v| (v * inverse + 0.5).floor() / inverse)?
            }
            Func::Clamp => {
                let (lo, hi) = (self.scalar_arg(args, 1, t)?, self.scalar_arg(args, 2, t)?);
                if hi < lo {
                    return Ok(Value::Vector(Vec::new()));
                }
                map(vector_arg(0)?, &|v| go_max(lo, go_min(hi, v)))?
            }
            Func::ClampMin => {
                let lo = self.scalar_arg(args, 1, t)?;
                map(vector_arg(0)?, &|v| go_max(lo, v))?
            }
            Func::ClampMax => {
                let hi = self.scalar_arg(args, 1, t)?;
                map(vector_arg(0)?, &|v| go_min(hi, v))?
            }
            Func::Date(f) => {
                if args.is_empty() {
                    Value::Vector(vec![Sample { labels: Labels::default(), value: f.apply(t_seconds) }])
                } else {
                    map(vector_arg(0)?, &|v| f.apply(v))?
                }
            }
            Func::Timestamp => {
                // A selector gives its samples' own times; anything else the evaluation time.
                if let Some(Node::Instant { selection, anchor }) = args.first() {
                    let refer = anchor.reference(t);
                    let mut out = Vec::new();
                    for s in &self.data[*selection] {
                        if let Some((ts, _)) = self.latest(s, refer) {
                            out.push(Sample { labels: s.labels.without_name(), value: ts as f64 / 1e9 });
                        }
                    }
                    check_unique(&out)?;
                    Value::Vector(out)
                } else {
                    map(vector_arg(0)?, &|_| t_seconds)?
                }
            }
            Func::Vector => {
                Value::Vector(vec![Sample { labels: Labels::default(), value: self.scalar_arg(args, 0, t)? }])
            }
            Func::Scalar => {
                let v = vector_arg(0)?;
                Value::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN })
            }
            Func::Sort | Func::SortDesc => {
                let mut v = vector_arg(0)?;
                if func == Func::Sort {
                    v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Less,
                        (false, true) => std::cmp::Ordering::Greater,
                        _ => a.value.total_cmp(&b.value),
                    });
                } else {
                    v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => b.value.total_cmp(&a.value),
                    });
                }
                Value::Vector(v)
            }
            Func::Absent => {
                let v = vector_arg(0)?;
                Value::Vector(if v.is_empty() {
                    vec![Sample { labels: absent_labels.clone(), value: 1.0 }]
                } else {
                    Vec::new()
                })
            }
            Func::LabelReplace => {
                let v = vector_arg(0)?;
                let dst = self.string_arg(args, 1)?;
                let replacement = self.string_arg(args, 2)?;
                let src = self.string_arg(args, 3)?;
                let pattern = self.string_arg(args, 4)?;
                let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    Error::Execution(format!("invalid regular expression in label_replace(): {pattern}: {e}"))
                })?;
                if !valid_label_name(&dst) {
                    return Err(Error::Execution(format!("invalid destination label name in label_replace(): {dst}")));
                }
                let mut out = Vec::with_capacity(v.len());
                for s in v {
                    let value = s.labels.get(&src).unwrap_or("");
                    let labels = match re.captures(value) {
                        Some(caps) => {
                            let mut res = String::new();
                            caps.expand(&replacement, &mut res);
                            with_label(&s.labels, &dst, &res)
                        }
                        None => s.labels,
                    };
                    out.push(Sample { labels, value: s.value });
                }
                check_unique(&out)?;
                Value::Vector(out)
            }
            Func::LabelJoin => {
                let v = vector_arg(0)?;
                let dst = self.string_arg(args, 1)?;
                let sep = self.string_arg(args, 2)?;
                let mut srcs = Vec::new();
                for i in 3..args.len() {
                    let src = self.string_arg(args, i)?;
                    if !valid_label_name(&src) {
                        return Err(Error::Execution(format!("invalid source label name in label_join(): {src}")));
                    }
                    srcs.push(src);
                }
                if !valid_label_name(&dst) {
                    return Err(Error::Execution(format!("invalid destination label name in label_join(): {dst}")));
                }
                let mut out = Vec::with_capacity(v.len());
                for s in v {
                    let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                    let labels = with_label(&s.labels, &dst, &joined.join(&sep));
                    out.push(Sample { labels, value: s.value });
                }
                check_unique(&out)?;
                Value::Vector(out)
            }
            Func::HistogramQuantile => {
                let q = self.scalar_arg(args, 0, t)?;
                let v = vector_arg(1)?;
                let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
                let mut order = Vec::new();
                for s in v {
                    let Some(le) = s.labels.get("le").and_then(parse_go_float) else { continue };
                    let key = s.labels.project(&["le".to_string()], false);
                    match groups.entry(key) {
                        Entry::Occupied(mut e) => e.get_mut().push((le, s.value)),
                        Entry::Vacant(e) => {
                            order.push(e.key().clone());
                            e.insert(vec![(le, s.value)]);
                        }
                    }
                }
                let mut out = Vec::with_capacity(order.len());
                for labels in order {
                    let mut buckets = groups.remove(&labels).unwrap_or_default();
                    out.push(Sample { labels, value: bucket_quantile(q, &mut buckets) });
                }
                Value::Vector(out)
            }
            _ => return Err(Error::Execution(format!("{func:?} needs a range vector"))),
        })
    }
}

/// The windows whose samples lie in `[start, end]`: whole windows between the bounds; of a window
/// across `end`, its first sample when that is in; of one across `start`, its last when that is in.
/// Exact when `start` and `end` are window boundaries (a window's samples start at its start).
fn windows_in(windows: &[crate::Window], start: i64, end: i64) -> Vec<crate::Window> {
    let from = windows.partition_point(|w| w.aggregate.last.0 < start);
    let mut out = Vec::new();
    for w in &windows[from..] {
        let (first, last) = (w.aggregate.first, w.aggregate.last);
        if first.0 > end {
            break;
        }
        if first.0 >= start && last.0 <= end {
            out.push(*w);
        } else if first.0 >= start {
            out.push(crate::Window::of(first.0, first.1));
        } else if last.0 <= end {
            out.push(crate::Window::of(last.0, last.1));
        }
    }
    out
}

/// A float as Go's `strconv.ParseFloat` reads it (`+Inf`, `-Inf`, `NaN`, and decimals).
fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Whether `name` is a valid Prometheus label name.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `labels` with `name` set to `value` (removed when `value` is empty).
fn with_label(labels: &Labels, name: &str, value: &str) -> Labels {
    let mut pairs: Vec<(Arc<str>, Arc<str>)> = labels.pairs().iter().filter(|(k, _)| &**k != name).cloned().collect();
    if !value.is_empty() {
        pairs.push((Arc::from(name), Arc::from(value)));
    }
    Labels::new(pairs)
}

/// The labels an aggregation groups a sample under.
fn group_labels(labels: &Labels, grouping: &Grouping) -> Labels {
    labels.project(&grouping.labels, grouping.keep)
}

#[derive(Debug)]
struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: f64,
    values: Vec<Sample>,
}

fn aggregate(op: AggOp, input: Vec<Sample>, param: Option<Value>, grouping: &Grouping) -> Result<Vec<Sample>, Error> {
    let mut grouping = grouping.clone();
    let mut input = input;
    let mut k = 0usize;
    let mut q = f64::NAN;
    match op {
        AggOp::CountValues => {
            let label = match &param {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(Error::BadData("count_values needs a string label name".into())),
            };
            if !valid_label_name(&label) {
                return Err(Error::Execution(format!("invalid label name {label:?}")));
            }
            for s in &mut input {
                s.labels = with_label(&s.labels, &label, &format_value(s.value));
            }
            if grouping.keep {
                grouping.labels.push(label);
            }
        }
        AggOp::Topk | AggOp::Bottomk => {
            let p = param.as_ref().map_or(f64::NAN, Value::scalar);
            let kk = if p.is_nan() { 0 } else { p as i64 };
            if kk < 1 {
                return Ok(Vec::new());
            }
            k = usize::try_from(kk).unwrap_or(usize::MAX).min(input.len());
        }
        AggOp::Quantile => q = param.as_ref().map_or(f64::NAN, Value::scalar),
        _ => {}
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in input {
        let key = group_labels(&s.labels, &grouping);
        let i = match index.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let labels = e.key().clone();
                e.insert(groups.len());
                groups.push(Group { labels, value: s.value, mean: s.value, count: 0.0, values: Vec::new() });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.count += 1.0;
        let first = g.count == 1.0;
        match op {
            AggOp::Sum if !first => g.value += s.value,
            AggOp::Avg if !first => {
                if g.mean.is_infinite() {
                    if s.value.is_infinite() && (g.mean > 0.0) == (s.value > 0.0) {
                        continue;
                    }
                    if !s.value.is_infinite() && !s.value.is_nan() {
                        continue;
                    }
                }
                g.mean += s.value / g.count - g.mean / g.count;
            }
            AggOp::Min if !first && (g.value > s.value || g.value.is_nan()) => g.value = s.value,
            AggOp::Max if !first && (g.value < s.value || g.value.is_nan()) => g.value = s.value,
            AggOp::Stddev | AggOp::Stdvar => {
                if first {
                    g.mean = 0.0;
                    g.value = 0.0;
                }
                let delta = s.value - g.mean;
                g.mean += delta / g.count;
                g.value += delta * (s.value - g.mean);
            }
            AggOp::Topk | AggOp::Bottomk | AggOp::Quantile => g.values.push(s),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let value = match op {
            AggOp::Sum | AggOp::Min | AggOp::Max => g.value,
            AggOp::Avg => g.mean,
            AggOp::Count | AggOp::CountValues => g.count,
            AggOp::Group => 1.0,
            AggOp::Stdvar => g.value / g.count,
            AggOp::Stddev => (g.value / g.count).sqrt(),
            AggOp::Quantile => {
                let mut vals: Vec<f64> = g.values.iter().map(|s| s.value).collect();
                functions::quantile(q, &mut vals)
            }
            AggOp::Topk | AggOp::Bottomk => {
                out.extend(select_k(std::mem::take(&mut g.values), k, op == AggOp::Topk));
                continue;
            }
        };
        out.push(Sample { labels: g.labels, value });
    }
    Ok(out)
}

/// The `k` largest (`top`) or smallest samples, NaN ranked last either way, best first; ties keep
/// the earlier sample.
fn select_k(values: Vec<Sample>, k: usize, top: bool) -> Vec<Sample> {
    // `better(a, b)`: a ranks before b.
    let better = |a: f64, b: f64| {
        if a.is_nan() {
            false
        } else if b.is_nan() {
            true
        } else if top {
            a > b
        } else {
            a < b
        }
    };
    let mut kept: Vec<Sample> = Vec::with_capacity(k);
    for s in values {
        if kept.len() < k {
            let at = kept.partition_point(|x| !better(s.value, x.value));
            kept.insert(at, s);
        } else if let Some(worst) = kept.last()
            && better(s.value, worst.value)
        {
            kept.pop();
            let at = kept.partition_point(|x| !better(s.value, x.value));
            kept.insert(at, s);
        }
    }
    kept
}

/// The value of `l op r` and whether a comparison keeps the element.
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

fn binary(
    op: BinOp,
    lhs: Value,
    rhs: Value,
    return_bool: bool,
    matching: &Grouping,
    card: Card,
    include: &[String],
) -> Result<Value, Error> {
    let drops_name = !op.is_comparison() || return_bool;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = elem(op, l, r);
            Ok(Value::Scalar(if op.is_comparison() { if keep { 1.0 } else { 0.0 } } else { v }))
        }
        (Value::Vector(v), Value::Scalar(r)) => vector_scalar(op, v, r, false, return_bool, drops_name),
        (Value::Scalar(l), Value::Vector(v)) => vector_scalar(op, v, l, true, return_bool, drops_name),
        (Value::Vector(l), Value::Vector(r)) => match op {
            BinOp::And | BinOp::Or | BinOp::Unless => Ok(Value::Vector(set_op(op, l, r, matching))),
            _ => vector_vector(op, l, r, return_bool, matching, card, include),
        },
        _ => Err(Error::Execution("binary operation on an unexpected value".into())),
    }
}

fn vector_scalar(
    op: BinOp,
    v: Vec<Sample>,
    scalar: f64,
    swap: bool,
    return_bool: bool,
    drops_name: bool,
) -> Result<Value, Error> {
    let mut out = Vec::with_capacity(v.len());
    for s in v {
        let (l, r) = if swap { (scalar, s.value) } else { (s.value, scalar) };
        let (mut value, mut keep) = elem(op, l, r);
        if op.is_comparison() && swap {
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let labels = if drops_name { s.labels.without_name() } else { s.labels };
            out.push(Sample { labels, value });
        }
    }
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

fn signature(labels: &Labels, matching: &Grouping) -> u64 {
    labels.signature(&matching.labels, matching.keep)
}

fn set_op(op: BinOp, lhs: Vec<Sample>, rhs: Vec<Sample>, matching: &Grouping) -> Vec<Sample> {
    match op {
        BinOp::And => {
            let right: std::collections::HashSet<u64> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
            lhs.into_iter().filter(|s| right.contains(&signature(&s.labels, matching))).collect()
        }
        BinOp::Unless => {
            let right: std::collections::HashSet<u64> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
            lhs.into_iter().filter(|s| !right.contains(&signature(&s.labels, matching))).collect()
        }
        _ => {
            let left: std::collections::HashSet<u64> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|s| !left.contains(&signature(&s.labels, matching))));
            out
        }
    }
}

fn vector_vector(
    op: BinOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    return_bool: bool,
    matching: &Grouping,
    card: Card,
    include: &[String],
) -> Result<Value, Error> {
    // The "one" side goes right.
    let (many, one) = if card == Card::OneToMany { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<u64, &Sample> = HashMap::with_capacity(one.len());
    for s in &one {
        let sig = signature(&s.labels, matching);
        if let Some(dup) = right.insert(sig, s) {
            let side = if card == Card::OneToMany { "left" } else { "right" };
            return Err(Error::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                s.labels.project(&matching.labels, matching.keep),
                s.labels,
                dup.labels
            )));
        }
    }
    let mut matched: HashMap<u64, Option<std::collections::HashSet<Labels>>> = HashMap::new();
    let mut out = Vec::new();
    for s in &many {
        let sig = signature(&s.labels, matching);
        let Some(r) = right.get(&sig) else { continue };
        let (l, rv) = if card == Card::OneToMany { (r.value, s.value) } else { (s.value, r.value) };
        let (mut value, keep) = elem(op, l, rv);
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut labels = result_labels(&s.labels, &r.labels, op, matching, card, include);
        if return_bool {
            labels = labels.without_name();
        }
        match matched.entry(sig) {
            Entry::Occupied(mut e) => match e.get_mut() {
                None => {
                    return Err(Error::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
                Some(seen) => {
                    if !seen.insert(labels.clone()) {
                        return Err(Error::Execution(
                            "multiple matches for labels: grouping labels must ensure unique matches".into(),
                        ));
                    }
                }
            },
            Entry::Vacant(e) => {
                e.insert(if card == Card::OneToOne { None } else { Some([labels.clone()].into()) });
            }
        }
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}

fn result_labels(
    many: &Labels,
    one: &Labels,
    op: BinOp,
    matching: &Grouping,
    card: Card,
    include: &[String],
) -> Labels {
    let mut pairs: Vec<(Arc<str>, Arc<str>)> = many.pairs().to_vec();
    if !op.is_comparison() {
        pairs.retain(|(k, _)| &**k != METRIC_NAME);
    }
    if card == Card::OneToOne {
        if matching.keep {
            pairs.retain(|(k, _)| matching.labels.iter().any(|l| l == &**k));
        } else {
            pairs.retain(|(k, _)| !matching.labels.iter().any(|l| l == &**k));
        }
    }
    for name in include {
        pairs.retain(|(k, _)| &**k != name.as_str());
        if let Some(v) = one.get(name) {
            pairs.push((Arc::from(name.as_str()), Arc::from(v)));
        }
    }
    Labels::new(pairs)
}
