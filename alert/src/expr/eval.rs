//! Evaluating a [`Plan`] at one instant, with Prometheus' semantics for labels, matching and
//! staleness.

use std::collections::HashMap;

use super::functions;
use super::{AggOp, BinOp, Matching, Plan};
use crate::labels::Labels;
use crate::series::{SeriesStore, is_stale};

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) labels: Labels,
    pub(crate) value: f64,
}

/// The result of an expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

impl Value {
    fn vector(self) -> Vec<Sample> {
        match self {
            Value::Vector(v) => v,
            Value::Scalar(_) => Vec::new(),
        }
    }
}

/// Evaluates `plan` at `at` (ns). An instant selector sees a series' latest sample at or before `at`
/// and no older than `lookback_ns` (both ends inclusive), unless that sample is a staleness marker.
pub(crate) fn evaluate(plan: &Plan, store: &SeriesStore, at: i64, lookback_ns: i64) -> Result<Value, String> {
    Ctx { store, at, lookback_ns }.eval(plan)
}

struct Ctx<'a> {
    store: &'a SeriesStore,
    at: i64,
    lookback_ns: i64,
}

impl Ctx<'_> {
    fn eval(&self, plan: &Plan) -> Result<Value, String> {
        Ok(match plan {
            Plan::Number(v) => Value::Scalar(*v),
            Plan::Time => Value::Scalar(self.at as f64 / 1e9),
            Plan::Instant(sel) => Value::Vector(self.instant(*sel)),
            Plan::Range { func, selector, range_ns, param } => {
                let param = match param {
                    Some(p) => match self.eval(p)? {
                        Value::Scalar(v) => Some(v),
                        Value::Vector(_) => return Err("quantile must be a scalar".into()),
                    },
                    None => None,
                };
                let mut out = Vec::new();
                let mut buf = Vec::new();
                for &slot in &self.store.selectors[*selector].members {
                    let s = self.store.get(slot);
                    buf.clear();
                    buf.extend(s.range(self.at - range_ns, self.at).filter(|&(_, v)| !is_stale(v)));
                    if let Some(value) = functions::over_time(*func, &buf, self.at, *range_ns, param) {
                        let labels =
                            if *func == super::RangeFn::Last { s.labels.clone() } else { s.labels_no_name.clone() };
                        out.push(Sample { labels, value });
                    }
                }
                Value::Vector(out)
            }
            Plan::Absent { arg, labels } => {
                let present = !self.eval(arg)?.vector().is_empty();
                Value::Vector(if present { Vec::new() } else { vec![Sample { labels: labels.clone(), value: 1.0 }] })
            }
            Plan::AbsentOverTime { selector, range_ns, labels } => {
                let present = self.store.selectors[*selector]
                    .members
                    .iter()
                    .any(|&slot| self.store.get(slot).range(self.at - range_ns, self.at).any(|(_, v)| !is_stale(v)));
                Value::Vector(if present { Vec::new() } else { vec![Sample { labels: labels.clone(), value: 1.0 }] })
            }
            Plan::Vector(arg) => match self.eval(arg)? {
                Value::Scalar(v) => Value::Vector(vec![Sample { labels: Labels::default(), value: v }]),
                v => v,
            },
            Plan::Neg(arg) => match self.eval(arg)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(v) => Value::Vector(
                    v.into_iter().map(|s| Sample { labels: s.labels.without_name(), value: -s.value }).collect(),
                ),
            },
            Plan::Aggregate { op, arg, grouping, without } => {
                Value::Vector(aggregate(*op, self.eval(arg)?.vector(), grouping, *without))
            }
            Plan::Binary { op, lhs, rhs, return_bool, matching } => {
                binary(*op, self.eval(lhs)?, self.eval(rhs)?, *return_bool, matching)?
            }
        })
    }

    fn instant(&self, selector: usize) -> Vec<Sample> {
        let from = self.at - self.lookback_ns;
        let mut out = Vec::new();
        for &slot in &self.store.selectors[selector].members {
            let s = self.store.get(slot);
            if let Some((t, v)) = s.latest(self.at)
                && t >= from
                && !is_stale(v)
            {
                out.push(Sample { labels: s.labels.clone(), value: v });
            }
        }
        out
    }
}

fn aggregate(op: AggOp, input: Vec<Sample>, grouping: &[String], without: bool) -> Vec<Sample> {
    struct Group {
        labels: Labels,
        value: f64,
        count: f64,
    }
    let keep = !without;
    let mut groups: HashMap<u64, Group> = HashMap::new();
    let mut order = Vec::new();
    for s in input {
        let sig = s.labels.signature(grouping, keep);
        match groups.get_mut(&sig) {
            None => {
                order.push(sig);
                let value = if op == AggOp::Count { 1.0 } else { s.value };
                groups.insert(sig, Group { labels: s.labels.project(grouping, keep), value, count: 1.0 });
            }
            Some(g) => {
                g.count += 1.0;
                match op {
                    AggOp::Sum => g.value += s.value,
                    AggOp::Avg => g.value += (s.value - g.value) / g.count,
                    AggOp::Count => g.value += 1.0,
                    AggOp::Min => {
                        if g.value > s.value || g.value.is_nan() {
                            g.value = s.value;
                        }
                    }
                    AggOp::Max => {
                        if g.value < s.value || g.value.is_nan() {
                            g.value = s.value;
                        }
                    }
                }
            }
        }
    }
    order
        .into_iter()
        .map(|sig| {
            let g = groups.remove(&sig).expect("group of its own signature");
            Sample { labels: g.labels, value: g.value }
        })
        .collect()
}

/// `lhs op rhs` on two numbers: the value, and for comparisons whether the element is kept.
fn apply(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => unreachable!("set operators are matched, not applied"),
    }
}

fn binary(op: BinOp, lhs: Value, rhs: Value, return_bool: bool, matching: &Matching) -> Result<Value, String> {
    let comparison = op.is_comparison();
    let bool_value = |keep: bool| f64::from(u8::from(keep));
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = apply(op, l, r);
            Ok(Value::Scalar(if comparison { bool_value(keep) } else { v }))
        }
        (Value::Vector(v), Value::Scalar(r)) => Ok(Value::Vector(vector_scalar(op, v, r, false, return_bool))),
        (Value::Scalar(l), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(op, v, l, true, return_bool))),
        (Value::Vector(l), Value::Vector(r)) if op.is_set() => Ok(Value::Vector(set_op(op, l, r, matching))),
        (Value::Vector(l), Value::Vector(r)) => {
            let keep = matching.on;
            let mut right: HashMap<u64, f64> = HashMap::with_capacity(r.len());
            for s in &r {
                if right.insert(s.labels.signature(&matching.labels, keep), s.value).is_some() {
                    return Err(format!(
                        "many-to-many matching not allowed: several series on the right side match {}",
                        s.labels.project(&matching.labels, keep)
                    ));
                }
            }
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for s in l {
                let sig = s.labels.signature(&matching.labels, keep);
                let Some(&rv) = right.get(&sig) else { continue };
                if !seen.insert(sig) {
                    return Err(format!(
                        "found duplicate series for the match group {} on the left side",
                        s.labels.project(&matching.labels, keep)
                    ));
                }
                let (v, kept) = apply(op, s.value, rv);
                if comparison && !kept && !return_bool {
                    continue;
                }
                let value = if comparison && return_bool { bool_value(kept) } else { v };
                let mut labels = if !comparison || return_bool { s.labels.without_name() } else { s.labels };
                if matching.on {
                    labels = labels.project(&matching.labels, true);
                } else if !matching.labels.is_empty() {
                    labels = labels.project(&matching.labels, false);
                }
                out.push(Sample { labels, value });
            }
            Ok(Value::Vector(out))
        }
    }
}

fn vector_scalar(op: BinOp, v: Vec<Sample>, scalar: f64, scalar_left: bool, return_bool: bool) -> Vec<Sample> {
    let comparison = op.is_comparison();
    v.into_iter()
        .filter_map(|s| {
            let (l, r) = if scalar_left { (scalar, s.value) } else { (s.value, scalar) };
            let (mut value, keep) = apply(op, l, r);
            if comparison {
                if return_bool {
                    return Some(Sample { labels: s.labels.without_name(), value: f64::from(u8::from(keep)) });
                }
                if !keep {
                    return None;
                }
                // The vector's own value is the result of a filter, whichever side it is on.
                value = s.value;
                return Some(Sample { labels: s.labels, value });
            }
            Some(Sample { labels: s.labels.without_name(), value })
        })
        .collect()
}

fn set_op(op: BinOp, l: Vec<Sample>, r: Vec<Sample>, matching: &Matching) -> Vec<Sample> {
    let keep = matching.on;
    let sig = |s: &Sample| s.labels.signature(&matching.labels, keep);
    match op {
        BinOp::And => {
            let right: std::collections::HashSet<u64> = r.iter().map(sig).collect();
            l.into_iter().filter(|s| right.contains(&sig(s))).collect()
        }
        BinOp::Unless => {
            let right: std::collections::HashSet<u64> = r.iter().map(sig).collect();
            l.into_iter().filter(|s| !right.contains(&sig(s))).collect()
        }
        _ => {
            let left: std::collections::HashSet<u64> = l.iter().map(sig).collect();
            let mut out = l;
            out.extend(r.into_iter().filter(|s| !left.contains(&sig(s))));
            out
        }
    }
}
