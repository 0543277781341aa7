//! A parsed expression turned into the tree the evaluator walks: selectors numbered, functions and
//! operators resolved once, durations in nanoseconds, and every construct outside what the engine
//! evaluates refused here with the construct named.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality};

use crate::Error;
use crate::functions::Func;
use crate::labels::{Labels, METRIC_NAME};

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
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
    pub(crate) fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le)
    }

    pub(crate) fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

/// `by`/`without` of an aggregation, `on`/`ignoring` of a binary operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Grouping {
    /// `by`/`on` when true; `without`/`ignoring` (or nothing) when false.
    pub(crate) keep: bool,
    pub(crate) labels: Vec<String>,
}

/// Which side of a binary operation is the "many" side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// Where a selector or subquery is anchored: the evaluation time, or a fixed `@` time (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Anchor {
    pub(crate) at: Option<i64>,
    pub(crate) offset_ns: i64,
}

impl Anchor {
    /// The reference time of an evaluation at `t`.
    pub(crate) fn reference(&self, t: i64) -> i64 {
        self.at.unwrap_or(t) - self.offset_ns
    }
}

/// The expression tree the evaluator walks.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Number(f64),
    String(String),
    /// An instant selector: index into the loaded selections.
    Instant {
        selection: usize,
        anchor: Anchor,
    },
    /// A range selector `[range]`.
    Matrix {
        selection: usize,
        range_ns: i64,
        anchor: Anchor,
    },
    Subquery {
        expr: Box<Node>,
        range_ns: i64,
        step_ns: Option<i64>,
        anchor: Anchor,
    },
    Call {
        func: Func,
        args: Vec<Node>,
        absent_labels: Labels,
    },
    Aggregate {
        op: AggOp,
        expr: Box<Node>,
        param: Option<Box<Node>>,
        grouping: Grouping,
    },
    Neg(Box<Node>),
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        return_bool: bool,
        matching: Grouping,
        card: Card,
        include: Vec<String>,
    },
}

/// What an expression evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number.
    Scalar,
    /// A string literal.
    String,
    /// An instant vector.
    Vector,
    /// A range vector.
    Matrix,
}

impl Kind {
    /// Prometheus' name for the kind (`resultType`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scalar => "scalar",
            Kind::String => "string",
            Kind::Vector => "vector",
            Kind::Matrix => "matrix",
        }
    }
}

/// What reads a selector's samples, which decides whether rollups can stand in for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// An instant selector: the latest sample at each step (a rollup window's last sample serves).
    Instant,
    /// A range function (its name) over a range selector of this length (ns).
    OverTime(&'static str, i64),
    /// Anything else (a range vector answered as such, `timestamp()`): raw samples only.
    Raw,
}

impl Consumer {
    /// Whether rollup windows answer it exactly when the steps and the range are multiples of
    /// their resolution: instant selectors and the `*_over_time` functions rollup aggregates hold.
    pub fn rollups_serve(&self) -> bool {
        match self {
            Consumer::Instant => true,
            Consumer::OverTime(f, _) => matches!(
                *f,
                "count_over_time"
                    | "sum_over_time"
                    | "avg_over_time"
                    | "min_over_time"
                    | "max_over_time"
                    | "last_over_time"
                    | "present_over_time"
            ),
            Consumer::Raw => false,
        }
    }
}

/// One selector's data need: the series its matchers select, between two times (ns, inclusive).
#[derive(Debug, Clone)]
pub struct Selection {
    /// All matchers, `__name__` included when the selector names a metric.
    pub matchers: Vec<Matcher>,
    /// What reads the samples.
    pub consumer: Consumer,
    /// Earliest sample time any evaluation reads.
    pub start_ns: i64,
    /// Latest sample time any evaluation reads.
    pub end_ns: i64,
}

impl Selection {
    /// Whether a series with these labels is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
    }

    /// The metric name when an equality matcher fixes it.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers.iter().find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal).map(|m| m.value.as_str())
    }

    /// The label values equality matchers require (other than the name; `l=""` also matches series
    /// without `l`, so it requires nothing).
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.matchers
            .iter()
            .filter(|m| m.name != METRIC_NAME && m.op == MatchOp::Equal && !m.value.is_empty())
            .map(|m| (m.name.as_str(), m.value.as_str()))
    }
}

/// The compiler from the parser's AST.
pub(crate) struct Planner {
    pub(crate) selectors: Vec<Vec<Matcher>>,
    pub(crate) consumers: Vec<Consumer>,
    /// Inside a subquery: selectors there are evaluated at the subquery's steps, so they read raw.
    subqueries: usize,
    /// Query start and end (ns), what `@ start()` and `@ end()` mean.
    start_ns: i64,
    end_ns: i64,
}

pub(crate) fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::BadData(format!("{what} is not supported by Yaffle's PromQL engine"))
}

fn duration_ns(d: &Duration) -> Result<i64, Error> {
    i64::try_from(d.as_nanos()).map_err(|_| Error::BadData(format!("duration {d:?} is too long")))
}

fn offset_ns(o: &Option<Offset>) -> Result<i64, Error> {
    Ok(match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ns(d)?,
        Some(Offset::Neg(d)) => -duration_ns(d)?,
    })
}

fn system_time_ns(t: &SystemTime) -> Result<i64, Error> {
    let ns = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    i64::try_from(ns).map_err(|_| Error::BadData("the @ time is out of range".into()))
}

impl Planner {
    pub(crate) fn new(start_ns: i64, end_ns: i64) -> Self {
        Self { selectors: Vec::new(), consumers: Vec::new(), subqueries: 0, start_ns, end_ns }
    }

    fn anchor(&self, at: &Option<AtModifier>, offset: &Option<Offset>) -> Result<Anchor, Error> {
        let at = match at {
            None => None,
            Some(AtModifier::Start) => Some(self.start_ns),
            Some(AtModifier::End) => Some(self.end_ns),
            Some(AtModifier::At(t)) => Some(system_time_ns(t)?),
        };
        Ok(Anchor { at, offset_ns: offset_ns(offset)? })
    }

    fn selector(&mut self, vs: &parser::VectorSelector) -> Result<usize, Error> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(unsupported("`or` inside a selector"));
        }
        let mut matchers = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name
            && !matchers.iter().any(|m| m.name == METRIC_NAME)
        {
            matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
        }
        if matchers.iter().all(|m| m.is_match("")) {
            return Err(Error::BadData("vector selector must contain at least one non-empty matcher".into()));
        }
        self.selectors.push(matchers);
        self.consumers.push(Consumer::Raw);
        Ok(self.selectors.len() - 1)
    }

    pub(crate) fn plan(&mut self, expr: &Expr) -> Result<(Node, Kind), Error> {
        Ok(match expr {
            Expr::NumberLiteral(n) => (Node::Number(n.val), Kind::Scalar),
            Expr::StringLiteral(s) => (Node::String(s.val.clone()), Kind::String),
            Expr::Paren(p) => self.plan(&p.expr)?,
            Expr::VectorSelector(vs) => {
                let anchor = self.anchor(&vs.at, &vs.offset)?;
                let selection = self.selector(vs)?;
                if self.subqueries == 0 {
                    self.consumers[selection] = Consumer::Instant;
                }
                (Node::Instant { selection, anchor }, Kind::Vector)
            }
            Expr::MatrixSelector(ms) => {
                let anchor = self.anchor(&ms.vs.at, &ms.vs.offset)?;
                let selection = self.selector(&ms.vs)?;
                let node = Node::Matrix { selection, range_ns: duration_ns(&ms.range)?, anchor };
                (node, Kind::Matrix)
            }
            Expr::Subquery(sq) => {
                self.subqueries += 1;
                let planned = self.plan(&sq.expr);
                self.subqueries -= 1;
                let (inner, kind) = planned?;
                if !matches!(kind, Kind::Vector | Kind::Scalar) {
                    return Err(Error::BadData(format!(
                        "subquery is only allowed on instant vector, got {} instead",
                        kind.name()
                    )));
                }
                let step_ns = match &sq.step {
                    Some(s) if !s.is_zero() => Some(duration_ns(s)?),
                    _ => None,
                };
                let node = Node::Subquery {
                    expr: Box::new(inner),
                    range_ns: duration_ns(&sq.range)?,
                    step_ns,
                    anchor: self.anchor(&sq.at, &sq.offset)?,
                };
                (node, Kind::Matrix)
            }
            Expr::Extension(_) => return Err(unsupported("an extension expression")),
            Expr::Unary(u) => {
                let (inner, kind) = self.plan(&u.expr)?;
                (Node::Neg(Box::new(inner)), kind)
            }
            Expr::Call(call) => {
                let func = Func::parse(call.func.name)?;
                let mut args = Vec::with_capacity(call.args.args.len());
                for a in &call.args.args {
                    args.push(self.plan(a)?.0);
                }
                let absent_labels = match call.args.args.first().map(|a| unwrap_parens(a)) {
                    Some(Expr::VectorSelector(vs)) => absent_labels(vs),
                    Some(Expr::MatrixSelector(ms)) => absent_labels(&ms.vs),
                    _ => Labels::default(),
                };
                let kind = func.kind();
                match (func.matrix_arg().and_then(|i| args.get(i)), args.first()) {
                    (Some(Node::Matrix { selection, range_ns, .. }), _) if self.subqueries == 0 => {
                        self.consumers[*selection] = Consumer::OverTime(call.func.name, *range_ns);
                    }
                    // `timestamp(x)` reads the samples' own times.
                    (_, Some(Node::Instant { selection, .. })) if func == Func::Timestamp => {
                        self.consumers[*selection] = Consumer::Raw;
                    }
                    _ => {}
                }
                (Node::Call { func, args, absent_labels }, kind)
            }
            Expr::Aggregate(agg) => {
                let op = match agg.op.to_string().as_str() {
                    "sum" => AggOp::Sum,
                    "avg" => AggOp::Avg,
                    "min" => AggOp::Min,
                    "max" => AggOp::Max,
                    "count" => AggOp::Count,
                    "group" => AggOp::Group,
                    "stddev" => AggOp::Stddev,
                    "stdvar" => AggOp::Stdvar,
                    "topk" => AggOp::Topk,
                    "bottomk" => AggOp::Bottomk,
                    "quantile" => AggOp::Quantile,
                    "count_values" => AggOp::CountValues,
                    other => return Err(unsupported(format!("the aggregation {other}"))),
                };
                let (inner, kind) = self.plan(&agg.expr)?;
                if kind != Kind::Vector {
                    return Err(Error::BadData(format!(
                        "expected type instant vector in aggregation expression, got {}",
                        kind.name()
                    )));
                }
                let param = match &agg.param {
                    Some(p) => Some(Box::new(self.plan(p)?.0)),
                    None => None,
                };
                let grouping = match &agg.modifier {
                    None => Grouping { keep: true, labels: Vec::new() },
                    Some(LabelModifier::Include(l)) => Grouping { keep: true, labels: l.labels.clone() },
                    Some(LabelModifier::Exclude(l)) => Grouping { keep: false, labels: l.labels.clone() },
                };
                (Node::Aggregate { op, expr: Box::new(inner), param, grouping }, Kind::Vector)
            }
            Expr::Binary(b) => self.binary(b)?,
        })
    }

    fn binary(&mut self, b: &parser::BinaryExpr) -> Result<(Node, Kind), Error> {
        let op = match b.op.to_string().as_str() {
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "%" => BinOp::Mod,
            "^" => BinOp::Pow,
            "atan2" => BinOp::Atan2,
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
        let (lhs, lk) = self.plan(&b.lhs)?;
        let (rhs, rk) = self.plan(&b.rhs)?;
        for k in [lk, rk] {
            if !matches!(k, Kind::Scalar | Kind::Vector) {
                return Err(Error::BadData(format!(
                    "binary expression must contain only scalar and instant vector types, got {}",
                    k.name()
                )));
            }
        }
        let mut matching = Grouping::default();
        let mut return_bool = false;
        let mut card = if op.is_set() { Card::ManyToMany } else { Card::OneToOne };
        let mut include = Vec::new();
        if let Some(m) = &b.modifier {
            return_bool = m.return_bool;
            match &m.card {
                VectorMatchCardinality::ManyToOne(l) => {
                    card = Card::ManyToOne;
                    include = l.labels.clone();
                }
                VectorMatchCardinality::OneToMany(l) => {
                    card = Card::OneToMany;
                    include = l.labels.clone();
                }
                _ => {}
            }
            if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                return Err(unsupported("fill()"));
            }
            match &m.matching {
                Some(LabelModifier::Include(l)) => matching = Grouping { keep: true, labels: l.labels.clone() },
                Some(LabelModifier::Exclude(l)) => matching = Grouping { keep: false, labels: l.labels.clone() },
                None => {}
            }
        }
        if op.is_set() && (lk != Kind::Vector || rk != Kind::Vector) {
            return Err(Error::BadData(format!("set operator \"{}\" not allowed in binary scalar expression", b.op)));
        }
        let kind = if lk == Kind::Scalar && rk == Kind::Scalar { Kind::Scalar } else { Kind::Vector };
        if op.is_comparison() && kind == Kind::Scalar && !return_bool {
            return Err(Error::BadData("comparisons between scalars must use BOOL modifier".into()));
        }
        let node = Node::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), return_bool, matching, card, include };
        Ok((node, kind))
    }
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// The labels `absent()` gives its result: the selector's equality matchers, as Prometheus does.
pub fn absent_labels(vs: &parser::VectorSelector) -> Labels {
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

/// The time span (ns, inclusive) each selection is read over when `node` is evaluated at every
/// time in `[from, to]`.
pub(crate) fn spans(node: &Node, from: i64, to: i64, cfg: &crate::EngineConfig, out: &mut [(i64, i64)]) {
    let widen = |out: &mut [(i64, i64)], i: usize, lo: i64, hi: i64| {
        let s = &mut out[i];
        s.0 = s.0.min(lo);
        s.1 = s.1.max(hi);
    };
    let refs = |a: &Anchor| match a.at {
        Some(at) => (at - a.offset_ns, at - a.offset_ns),
        None => (from.saturating_sub(a.offset_ns), to.saturating_sub(a.offset_ns)),
    };
    match node {
        Node::Number(_) | Node::String(_) => {}
        Node::Instant { selection, anchor } => {
            let (lo, hi) = refs(anchor);
            widen(out, *selection, lo.saturating_sub(cfg.lookback_ns()), hi);
        }
        Node::Matrix { selection, range_ns, anchor, .. } => {
            let (lo, hi) = refs(anchor);
            widen(out, *selection, lo.saturating_sub(*range_ns), hi);
        }
        Node::Subquery { expr, range_ns, anchor, .. } => {
            let (lo, hi) = refs(anchor);
            spans(expr, lo.saturating_sub(*range_ns), hi, cfg, out);
        }
        Node::Call { args, .. } => args.iter().for_each(|a| spans(a, from, to, cfg, out)),
        Node::Aggregate { expr, param, .. } => {
            spans(expr, from, to, cfg, out);
            if let Some(p) = param {
                spans(p, from, to, cfg, out);
            }
        }
        Node::Neg(e) => spans(e, from, to, cfg, out),
        Node::Binary { lhs, rhs, .. } => {
            spans(lhs, from, to, cfg, out);
            spans(rhs, from, to, cfg, out);
        }
    }
}

/// Whether any selector or subquery in `node` is anchored with `@`.
pub(crate) fn uses_at(node: &Node) -> bool {
    match node {
        Node::Number(_) | Node::String(_) => false,
        Node::Instant { anchor, .. } | Node::Matrix { anchor, .. } => anchor.at.is_some(),
        Node::Subquery { expr, anchor, .. } => anchor.at.is_some() || uses_at(expr),
        Node::Call { args, .. } => args.iter().any(uses_at),
        Node::Aggregate { expr, param, .. } => uses_at(expr) || param.as_deref().is_some_and(uses_at),
        Node::Neg(e) => uses_at(e),
        Node::Binary { lhs, rhs, .. } => uses_at(lhs) || uses_at(rhs),
    }
}
