//! The PromQL subset evaluated on the stream: parsing (with `promql-parser`), checking that an
//! expression stays inside the subset, and evaluation at an instant over the in-memory series store.
//!
//! | PromQL | here |
//! | --- | --- |
//! | selectors with `=`, `!=`, `=~`, `!~` | yes |
//! | `offset`, `@`, subqueries, selector `or` | rejected |
//! | `avg/min/max/sum/count/last/quantile_over_time`, `rate`, `increase`, `delta` | yes |
//! | `absent`, `absent_over_time`, `vector`, `time` | yes |
//! | other functions | rejected |
//! | `sum/avg/min/max/count` with `by`/`without` | yes |
//! | other aggregations (`topk`, `quantile`, `stddev`, ...) | rejected |
//! | arithmetic and comparisons (with `bool`) between scalars and vectors | yes |
//! | one-to-one vector matching with `on`/`ignoring` | yes |
//! | `group_left`/`group_right` | rejected |
//! | `and`, `or`, `unless` | yes |

mod eval;
mod functions;

use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality};

pub(crate) use eval::{Value, evaluate};

use crate::labels::{Labels, METRIC_NAME};

/// A range function over a matrix selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeFn {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Quantile,
    Rate,
    Increase,
    Delta,
}

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le)
    }

    fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// Which labels two vectors are matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Matching {
    /// `on(...)` when true, `ignoring(...)` (or nothing) when false.
    pub(crate) on: bool,
    pub(crate) labels: Vec<String>,
}

/// A checked expression, ready to evaluate. Selectors are indexes into the evaluator's selector table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    Number(f64),
    Time,
    Instant(usize),
    Range { func: RangeFn, selector: usize, range_ns: i64, param: Option<Box<Plan>> },
    Absent { arg: Box<Plan>, labels: Labels },
    AbsentOverTime { selector: usize, range_ns: i64, labels: Labels },
    Vector(Box<Plan>),
    Aggregate { op: AggOp, arg: Box<Plan>, grouping: Vec<String>, without: bool },
    Neg(Box<Plan>),
    Binary { op: BinOp, lhs: Box<Plan>, rhs: Box<Plan>, return_bool: bool, matching: Matching },
}

/// Whether an expression yields a scalar or an instant vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Scalar,
    Vector,
}

/// The selectors of every compiled expression, shared so equal selectors are stored once.
#[derive(Debug, Default)]
pub(crate) struct Selectors {
    pub(crate) matchers: Vec<Vec<Matcher>>,
    keys: Vec<String>,
}

impl Selectors {
    fn intern(&mut self, matchers: Vec<Matcher>) -> usize {
        let mut key: Vec<String> = matchers.iter().map(|m| format!("{}{}{:?}", m.name, m.op, m.value)).collect();
        key.sort();
        let key = key.join(",");
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return i;
        }
        self.keys.push(key);
        self.matchers.push(matchers);
        self.matchers.len() - 1
    }
}

/// A compiled expression and the longest span of past samples it reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Compiled {
    pub(crate) plan: Plan,
    pub(crate) kind: Kind,
    /// Longest range of any matrix selector (instant selectors read the lookback instead).
    pub(crate) max_range_ns: i64,
}

/// Parses and checks an expression. The error names the construct outside the subset.
pub(crate) fn compile(source: &str, selectors: &mut Selectors) -> Result<Compiled, String> {
    let expr = parser::parse(source)?;
    let mut c = Compiler { selectors, max_range_ns: 0 };
    let (plan, kind) = c.compile(&expr)?;
    Ok(Compiled { plan, kind, max_range_ns: c.max_range_ns })
}

struct Compiler<'a> {
    selectors: &'a mut Selectors,
    max_range_ns: i64,
}

fn unsupported(what: impl std::fmt::Display) -> String {
    format!("{what} is not supported by the stream evaluator")
}

impl Compiler<'_> {
    fn compile(&mut self, expr: &Expr) -> Result<(Plan, Kind), String> {
        match expr {
            Expr::NumberLiteral(n) => Ok((Plan::Number(n.val), Kind::Scalar)),
            Expr::Paren(p) => self.compile(&p.expr),
            Expr::VectorSelector(vs) => Ok((Plan::Instant(self.selector(vs)?), Kind::Vector)),
            Expr::MatrixSelector(_) => Err(unsupported("a range vector outside a range function")),
            Expr::StringLiteral(_) => Err(unsupported("a string literal")),
            Expr::Subquery(_) => Err(unsupported("a subquery")),
            Expr::Extension(_) => Err(unsupported("an extension expression")),
            Expr::Unary(u) => {
                let (plan, kind) = self.compile(&u.expr)?;
                Ok((Plan::Neg(Box::new(plan)), kind))
            }
            Expr::Call(call) => self.call(call),
            Expr::Aggregate(agg) => {
                let op = match agg.op.to_string().as_str() {
                    "sum" => AggOp::Sum,
                    "avg" => AggOp::Avg,
                    "min" => AggOp::Min,
                    "max" => AggOp::Max,
                    "count" => AggOp::Count,
                    other => return Err(unsupported(format!("the aggregation {other}"))),
                };
                let (arg, kind) = self.compile(&agg.expr)?;
                if kind != Kind::Vector {
                    return Err(format!("{op:?} expects an instant vector"));
                }
                let (grouping, without) = match &agg.modifier {
                    None => (Vec::new(), false),
                    Some(LabelModifier::Include(l)) => (l.labels.clone(), false),
                    Some(LabelModifier::Exclude(l)) => (l.labels.clone(), true),
                };
                Ok((Plan::Aggregate { op, arg: Box::new(arg), grouping, without }, Kind::Vector))
            }
            Expr::Binary(b) => {
                let op = match b.op.to_string().as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    "/" => BinOp::Div,
                    "%" => BinOp::Mod,
                    "^" => BinOp::Pow,
                    "==" => BinOp::Eq,
                    "!=" => BinOp::Ne,
                    ">" => BinOp::Gt,
                    "<" => BinOp::Lt,
                    ">=" => BinOp::Ge,
                    "<=" => BinOp::Le,
                    "and" => BinOp::And,
                    "or" => BinOp::Or,
                    "unless" => BinOp::Unless,
                    other => return Err(unsupported(format!("the operator {other}"))),
                };
                let (lhs, lk) = self.compile(&b.lhs)?;
                let (rhs, rk) = self.compile(&b.rhs)?;
                let mut matching = Matching { on: false, labels: Vec::new() };
                let mut return_bool = false;
                if let Some(m) = &b.modifier {
                    return_bool = m.return_bool;
                    match &m.card {
                        VectorMatchCardinality::ManyToOne(_) => return Err(unsupported("group_left")),
                        VectorMatchCardinality::OneToMany(_) => return Err(unsupported("group_right")),
                        _ => {}
                    }
                    if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                        return Err(unsupported("fill()"));
                    }
                    match &m.matching {
                        Some(LabelModifier::Include(l)) => matching = Matching { on: true, labels: l.labels.clone() },
                        Some(LabelModifier::Exclude(l)) => matching = Matching { on: false, labels: l.labels.clone() },
                        None => {}
                    }
                }
                if op.is_set() && (lk != Kind::Vector || rk != Kind::Vector) {
                    return Err(format!("{} needs instant vectors on both sides", b.op));
                }
                let kind = if lk == Kind::Scalar && rk == Kind::Scalar { Kind::Scalar } else { Kind::Vector };
                if op.is_comparison() && kind == Kind::Scalar && !return_bool {
                    return Err("comparisons between scalars must use bool".into());
                }
                Ok((Plan::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), return_bool, matching }, kind))
            }
        }
    }

    fn selector(&mut self, vs: &parser::VectorSelector) -> Result<usize, String> {
        if vs.offset.is_some() {
            return Err(unsupported("offset"));
        }
        if vs.at.is_some() {
            return Err(unsupported("the @ modifier"));
        }
        if !vs.matchers.or_matchers.is_empty() {
            return Err(unsupported("`or` inside a selector"));
        }
        let mut matchers = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name
            && !matchers.iter().any(|m| m.name == METRIC_NAME)
        {
            matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
        }
        Ok(self.selectors.intern(matchers))
    }

    fn matrix(&mut self, expr: &Expr, func: &str) -> Result<(usize, i64, Labels), String> {
        let ms = match expr {
            Expr::MatrixSelector(ms) => ms,
            Expr::Subquery(_) => return Err(unsupported("a subquery")),
            _ => return Err(format!("{func} expects a range vector selector such as metric[5m]")),
        };
        let range_ns = i64::try_from(ms.range.as_nanos()).map_err(|_| "range too long".to_string())?;
        self.max_range_ns = self.max_range_ns.max(range_ns);
        Ok((self.selector(&ms.vs)?, range_ns, absent_labels(&ms.vs)))
    }

    fn call(&mut self, call: &parser::Call) -> Result<(Plan, Kind), String> {
        let name = call.func.name;
        let args = &call.args.args;
        let range = |f| Some(f);
        let func = match name {
            "avg_over_time" => range(RangeFn::Avg),
            "min_over_time" => range(RangeFn::Min),
            "max_over_time" => range(RangeFn::Max),
            "sum_over_time" => range(RangeFn::Sum),
            "count_over_time" => range(RangeFn::Count),
            "last_over_time" => range(RangeFn::Last),
            "quantile_over_time" => range(RangeFn::Quantile),
            "rate" => range(RangeFn::Rate),
            "increase" => range(RangeFn::Increase),
            "delta" => range(RangeFn::Delta),
            _ => None,
        };
        if let Some(func) = func {
            let (param, matrix) = if func == RangeFn::Quantile {
                let (p, kind) = self.compile(&args[0])?;
                if kind != Kind::Scalar {
                    return Err("quantile_over_time expects a scalar quantile".into());
                }
                (Some(Box::new(p)), &args[1])
            } else {
                (None, &args[0])
            };
            let (selector, range_ns, _) = self.matrix(matrix, name)?;
            return Ok((Plan::Range { func, selector, range_ns, param }, Kind::Vector));
        }
        match name {
            "absent" => {
                let labels = match &*args[0] {
                    Expr::VectorSelector(vs) => absent_labels(vs),
                    _ => Labels::default(),
                };
                let (arg, _) = self.compile(&args[0])?;
                Ok((Plan::Absent { arg: Box::new(arg), labels }, Kind::Vector))
            }
            "absent_over_time" => {
                let (selector, range_ns, labels) = self.matrix(&args[0], name)?;
                Ok((Plan::AbsentOverTime { selector, range_ns, labels }, Kind::Vector))
            }
            "vector" => {
                let (arg, _) = self.compile(&args[0])?;
                Ok((Plan::Vector(Box::new(arg)), Kind::Vector))
            }
            "time" => Ok((Plan::Time, Kind::Scalar)),
            other => Err(unsupported(format!("the function {other}()"))),
        }
    }
}

/// The labels `absent()` gives its result: the selector's equality matchers, as Prometheus does.
fn absent_labels(vs: &parser::VectorSelector) -> Labels {
    // A label with an equality matcher is kept, unless another matcher names it too.
    let mut pairs: Vec<(Arc<str>, Arc<str>)> = Vec::new();
    let mut dropped: Vec<&str> = Vec::new();
    for m in vs.matchers.matchers.iter().filter(|m| m.name != METRIC_NAME) {
        let seen = pairs.iter().any(|(k, _)| **k == *m.name);
        if m.op == MatchOp::Equal && !seen && !dropped.contains(&m.name.as_str()) {
            pairs.push((Arc::from(m.name.as_str()), Arc::from(m.value.as_str())));
        } else {
            pairs.retain(|(k, _)| **k != *m.name);
            dropped.push(&m.name);
        }
    }
    Labels::new(pairs)
}

#[cfg(test)]
mod tests;
