//! The values expressions evaluate to, and Prometheus' text form of a number.

use yaffle_core::Window;

use crate::labels::Labels;

/// Prometheus' staleness marker: a NaN with this bit pattern ends a series at its timestamp.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether a value is Prometheus' staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// A series: labels and samples `(time ns, value)`, oldest first; or, read from rollups, its
/// windows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// Its samples, sorted by time.
    pub samples: Vec<(i64, f64)>,
    /// Rollup windows, sorted by start (then `samples` is empty).
    pub windows: Vec<Window>,
}

impl Series {
    /// A series of raw samples.
    pub fn raw(labels: Labels, samples: Vec<(i64, f64)>) -> Self {
        Series { labels, samples, windows: Vec::new() }
    }

    /// The real samples a window series holds: each window's first and last.
    pub(crate) fn window_samples(&self) -> Vec<(i64, f64)> {
        let mut out = Vec::with_capacity(self.windows.len() * 2);
        for w in &self.windows {
            let a = &w.aggregate;
            out.push(a.first);
            if a.last.0 != a.first.0 {
                out.push(a.last);
            }
        }
        out
    }

    /// The samples with `from <= t <= to`.
    pub fn range(&self, from: i64, to: i64) -> &[(i64, f64)] {
        let start = self.samples.partition_point(|&(t, _)| t < from);
        let end = self.samples.partition_point(|&(t, _)| t <= to);
        &self.samples[start..end.max(start)]
    }
}

/// What an expression evaluates to at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector (an instant query of `x[5m]` or a subquery).
    Matrix(Vec<Series>),
}

impl Value {
    pub(crate) fn into_vector(self) -> Vec<Sample> {
        match self {
            Value::Vector(v) => v,
            _ => Vec::new(),
        }
    }

    pub(crate) fn scalar(&self) -> f64 {
        match self {
            Value::Scalar(v) => *v,
            _ => f64::NAN,
        }
    }
}

/// A number as Prometheus prints it in JSON and labels: the shortest decimal that reads back the
/// same, never an exponent; `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}
