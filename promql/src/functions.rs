//! PromQL functions, with Prometheus 2.x arithmetic (Kahan sums, `rate`'s extrapolation, Go's
//! `math.Max`/`math.Min` NaN rules).

use chrono::{DateTime, Datelike, Timelike};

use crate::Error;
use crate::plan::{Kind, unsupported};

/// A function the engine evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    // Range functions (a range vector argument).
    Rate,
    Irate,
    Increase,
    Delta,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    HoltWinters,
    AvgOverTime,
    SumOverTime,
    MinOverTime,
    MaxOverTime,
    CountOverTime,
    LastOverTime,
    PresentOverTime,
    QuantileOverTime,
    StddevOverTime,
    StdvarOverTime,
    AbsentOverTime,
    // Functions of an instant vector, value by value.
    Math(MathFn),
    Round,
    Clamp,
    ClampMin,
    ClampMax,
    Date(DateFn),
    // Others.
    Time,
    Timestamp,
    Vector,
    Scalar,
    Sort,
    SortDesc,
    Absent,
    LabelReplace,
    LabelJoin,
    HistogramQuantile,
    Pi,
}

/// A function applied to each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MathFn {
    Abs,
    Ceil,
    Floor,
    Exp,
    Sqrt,
    Ln,
    Log2,
    Log10,
    Sgn,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Deg,
    Rad,
}

/// A calendar field of a Unix time (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateFn {
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    DaysInMonth,
    Hour,
    Minute,
    Month,
    Year,
}

impl Func {
    pub(crate) fn parse(name: &str) -> Result<Func, Error> {
        use MathFn as M;
        Ok(match name {
            "rate" => Func::Rate,
            "irate" => Func::Irate,
            "increase" => Func::Increase,
            "delta" => Func::Delta,
            "idelta" => Func::Idelta,
            "deriv" => Func::Deriv,
            "predict_linear" => Func::PredictLinear,
            "resets" => Func::Resets,
            "changes" => Func::Changes,
            "holt_winters" => Func::HoltWinters,
            "avg_over_time" => Func::AvgOverTime,
            "sum_over_time" => Func::SumOverTime,
            "min_over_time" => Func::MinOverTime,
            "max_over_time" => Func::MaxOverTime,
            "count_over_time" => Func::CountOverTime,
            "last_over_time" => Func::LastOverTime,
            "present_over_time" => Func::PresentOverTime,
            "quantile_over_time" => Func::QuantileOverTime,
            "stddev_over_time" => Func::StddevOverTime,
            "stdvar_over_time" => Func::StdvarOverTime,
            "absent_over_time" => Func::AbsentOverTime,
            "abs" => Func::Math(M::Abs),
            "ceil" => Func::Math(M::Ceil),
            "floor" => Func::Math(M::Floor),
            "exp" => Func::Math(M::Exp),
            "sqrt" => Func::Math(M::Sqrt),
            "ln" => Func::Math(M::Ln),
            "log2" => Func::Math(M::Log2),
            "log10" => Func::Math(M::Log10),
            "sgn" => Func::Math(M::Sgn),
            "sin" => Func::Math(M::Sin),
            "cos" => Func::Math(M::Cos),
            "tan" => Func::Math(M::Tan),
            "asin" => Func::Math(M::Asin),
            "acos" => Func::Math(M::Acos),
            "atan" => Func::Math(M::Atan),
            "sinh" => Func::Math(M::Sinh),
            "cosh" => Func::Math(M::Cosh),
            "tanh" => Func::Math(M::Tanh),
            "asinh" => Func::Math(M::Asinh),
            "acosh" => Func::Math(M::Acosh),
            "atanh" => Func::Math(M::Atanh),
            "deg" => Func::Math(M::Deg),
            "rad" => Func::Math(M::Rad),
            "round" => Func::Round,
            "clamp" => Func::Clamp,
            "clamp_min" => Func::ClampMin,
            "clamp_max" => Func::ClampMax,
            "day_of_month" => Func::Date(DateFn::DayOfMonth),
            "day_of_week" => Func::Date(DateFn::DayOfWeek),
            "day_of_year" => Func::Date(DateFn::DayOfYear),
            "days_in_month" => Func::Date(DateFn::DaysInMonth),
            "hour" => Func::Date(DateFn::Hour),
            "minute" => Func::Date(DateFn::Minute),
            "month" => Func::Date(DateFn::Month),
            "year" => Func::Date(DateFn::Year),
            "time" => Func::Time,
            "timestamp" => Func::Timestamp,
            "vector" => Func::Vector,
            "scalar" => Func::Scalar,
            "sort" => Func::Sort,
            "sort_desc" => Func::SortDesc,
            "absent" => Func::Absent,
            "label_replace" => Func::LabelReplace,
            "label_join" => Func::LabelJoin,
            "histogram_quantile" => Func::HistogramQuantile,
            "pi" => Func::Pi,
            other => return Err(unsupported(format!("the function {other}()"))),
        })
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Func::Time | Func::Scalar | Func::Pi => Kind::Scalar,
            _ => Kind::Vector,
        }
    }

    /// Whether the function's range-vector argument is at this position.
    pub(crate) fn matrix_arg(self) -> Option<usize> {
        match self {
            Func::QuantileOverTime => Some(1),
            Func::Rate
            | Func::Irate
            | Func::Increase
            | Func::Delta
            | Func::Idelta
            | Func::Deriv
            | Func::PredictLinear
            | Func::Resets
            | Func::Changes
            | Func::HoltWinters
            | Func::AvgOverTime
            | Func::SumOverTime
            | Func::MinOverTime
            | Func::MaxOverTime
            | Func::CountOverTime
            | Func::LastOverTime
            | Func::PresentOverTime
            | Func::StddevOverTime
            | Func::StdvarOverTime
            | Func::AbsentOverTime => Some(0),
            _ => None,
        }
    }
}

/// Go's `math.Max`: +Inf wins over NaN, NaN over everything else.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN over everything else.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

impl MathFn {
    pub(crate) fn apply(self, v: f64) -> f64 {
        match self {
            MathFn::Abs => v.abs(),
            MathFn::Ceil => v.ceil(),
            MathFn::Floor => v.floor(),
            MathFn::Exp => v.exp(),
            MathFn::Sqrt => v.sqrt(),
            MathFn::Ln => v.ln(),
            MathFn::Log2 => v.log2(),
            MathFn::Log10 => v.log10(),
            MathFn::Sgn => {
                if v < 0.0 {
                    -1.0
                } else if v > 0.0 {
                    1.0
                } else {
                    v
                }
            }
            MathFn::Sin => v.sin(),
            MathFn::Cos => v.cos(),
            MathFn::Tan => v.tan(),
            MathFn::Asin => v.asin(),
            MathFn::Acos => v.acos(),
            MathFn::Atan => v.atan(),
            MathFn::Sinh => v.sinh(),
            MathFn::Cosh => v.cosh(),
            MathFn::Tanh => v.tanh(),
            MathFn::Asinh => v.asinh(),
            MathFn::Acosh => v.acosh(),
            MathFn::Atanh => v.atanh(),
            MathFn::Deg => v * 180.0 / std::f64::consts::PI,
            MathFn::Rad => v * std::f64::consts::PI / 180.0,
        }
    }
}

impl DateFn {
    /// The field of the Unix time `v` (seconds), as Go's `time.Unix(int64(v), 0).UTC()` gives it.
    pub(crate) fn apply(self, v: f64) -> f64 {
        let Some(t) = DateTime::from_timestamp(v as i64, 0) else {
            return f64::NAN;
        };
        f64::from(match self {
            DateFn::DayOfMonth => t.day(),
            DateFn::DayOfWeek => t.weekday().num_days_from_sunday(),
            DateFn::DayOfYear => t.ordinal(),
            DateFn::DaysInMonth => {
                let (y, m) = (t.year(), t.month());
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
                let next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1);
                match (first, next) {
                    (Some(a), Some(b)) => (b - a).num_days() as u32,
                    _ => return f64::NAN,
                }
            }
            DateFn::Hour => t.hour(),
            DateFn::Minute => t.minute(),
            DateFn::Month => t.month(),
            DateFn::Year => return f64::from(t.year()),
        })
    }
}

/// One step of Kahan-Babuška summation (Prometheus' `kahanSumInc`).
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `func` over the samples of one series in a window (oldest first, no staleness markers, at
/// least one); `None` when the function yields no element for this series. `range_start`/`range_end`
/// bound the window (for extrapolation), `at` is the evaluation time (for `predict_linear`), and
/// `params` the scalar arguments.
pub(crate) fn over_time(
    func: Func,
    samples: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    at: i64,
    params: &[f64],
) -> Result<Option<f64>, Error> {
    let values = || samples.iter().map(|&(_, v)| v);
    Ok(Some(match func {
        Func::CountOverTime => samples.len() as f64,
        Func::LastOverTime => samples[samples.len() - 1].1,
        Func::PresentOverTime => 1.0,
        Func::SumOverTime => {
            let (s, c) = values().fold((0.0, 0.0), |(s, c), v| kahan_inc(v, s, c));
            s + c
        }
        Func::AvgOverTime => {
            let (mut mean, mut c, mut count) = (0.0f64, 0.0, 0.0);
            for v in values() {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                (mean, c) = kahan_inc(v / count - mean / count, mean, c);
            }
            if mean.is_infinite() { mean } else { mean + c }
        }
        Func::MinOverTime => values().fold(f64::NAN, |m, v| if v < m || m.is_nan() { v } else { m }),
        Func::MaxOverTime => values().fold(f64::NAN, |m, v| if v > m || m.is_nan() { v } else { m }),
        Func::QuantileOverTime => {
            let mut vals: Vec<f64> = values().collect();
            quantile(params[0], &mut vals)
        }
        Func::StddevOverTime | Func::StdvarOverTime => {
            let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for v in values() {
                count += 1.0;
                let delta = v - (mean + c_mean);
                (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
                (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
            }
            let var = (aux + c_aux) / count;
            if func == Func::StddevOverTime { var.sqrt() } else { var }
        }
        Func::Changes => {
            let mut n = 0.0;
            for w in samples.windows(2) {
                let (prev, cur) = (w[0].1, w[1].1);
                if cur != prev && !(cur.is_nan() && prev.is_nan()) {
                    n += 1.0;
                }
            }
            n
        }
        Func::Resets => samples.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64,
        Func::Rate => return Ok(extrapolated(samples, range_start, range_end, true, true)),
        Func::Increase => return Ok(extrapolated(samples, range_start, range_end, true, false)),
        Func::Delta => return Ok(extrapolated(samples, range_start, range_end, false, false)),
        Func::Irate | Func::Idelta => {
            if samples.len() < 2 {
                return Ok(None);
            }
            let (last, prev) = (samples[samples.len() - 1], samples[samples.len() - 2]);
            let mut result = last.1 - prev.1;
            if func == Func::Irate && last.1 < prev.1 {
                result = last.1;
            }
            let interval = last.0 - prev.0;
            if interval == 0 {
                return Ok(None);
            }
            if func == Func::Irate {
                result /= interval as f64 / 1e9;
            }
            result
        }
        Func::Deriv => {
            if samples.len() < 2 {
                return Ok(None);
            }
            linear_regression(samples, samples[0].0).0
        }
        Func::PredictLinear => {
            if samples.len() < 2 {
                return Ok(None);
            }
            let (slope, intercept) = linear_regression(samples, at);
            slope * params[0] + intercept
        }
        Func::HoltWinters => {
            let (sf, tf) = (params[0], params[1]);
            if sf <= 0.0 || sf >= 1.0 || sf.is_nan() {
                return Err(Error::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                    crate::format_value(sf)
                )));
            }
            if tf <= 0.0 || tf >= 1.0 || tf.is_nan() {
                return Err(Error::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                    crate::format_value(tf)
                )));
            }
            if samples.len() < 2 {
                return Ok(None);
            }
            let (mut s0, mut s1) = (0.0, samples[0].1);
            let mut b = samples[1].1 - samples[0].1;
            for (i, &(_, v)) in samples.iter().enumerate().skip(1) {
                let x = sf * v;
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let y = (1.0 - sf) * (s1 + b);
                (s0, s1) = (s1, x + y);
            }
            s1
        }
        _ => return Ok(None),
    }))
}

/// `func` over rollup windows (at least one), for the functions their aggregates answer; `None`
/// for the others.
pub(crate) fn over_windows(func: Func, windows: &[crate::Window]) -> Option<f64> {
    let aggregates = || windows.iter().map(|w| &w.aggregate);
    let count: u64 = aggregates().map(|a| a.count).sum();
    let sum = || {
        let (s, c) = aggregates().fold((0.0, 0.0), |(s, c), a| kahan_inc(a.sum, s, c));
        s + c
    };
    Some(match func {
        Func::CountOverTime => count as f64,
        Func::SumOverTime => sum(),
        Func::AvgOverTime => sum() / count as f64,
        Func::MinOverTime => aggregates().fold(f64::NAN, |m, a| if a.min < m || m.is_nan() { a.min } else { m }),
        Func::MaxOverTime => aggregates().fold(f64::NAN, |m, a| if a.max > m || m.is_nan() { a.max } else { m }),
        Func::LastOverTime => windows[windows.len() - 1].aggregate.last.1,
        Func::PresentOverTime => 1.0,
        _ => return None,
    })
}

/// `rate`, `increase` and `delta` with Prometheus' extrapolation to the window's edges.
fn extrapolated(samples: &[(i64, f64)], range_start: i64, range_end: i64, counter: bool, rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut last_value = 0.0;
        for &(_, v) in samples {
            if v < last_value {
                result += last_value;
            }
            last_value = v;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1e9;
    let to_end = (range_end - last.0) as f64 / 1e9;
    let sampled = (last.0 - first.0) as f64 / 1e9;
    let average = sampled / (samples.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { average / 2.0 };
    interval += if to_end < threshold { to_end } else { average / 2.0 };
    let mut factor = interval / sampled;
    if rate {
        factor /= (range_end - range_start) as f64 / 1e9;
    }
    Some(result * factor)
}

/// Least-squares slope and intercept (at `intercept_time`, ns) of the samples, as Prometheus fits them.
fn linear_regression(samples: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in samples.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e9;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    (slope, sum_y / n - slope * sum_x / n)
}

/// The φ-quantile of `values` by linear interpolation between closest ranks, as PromQL computes it.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `histogram_quantile` over one histogram's buckets `(upper bound, cumulative count)`.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are one bucket.
    buckets.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
    // Counts are made monotonic (a scrape can see buckets out of step).
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|b| b.1 < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_as_prometheus() {
        // Samples every 15 s, a counter rising by 1 each: rate over [0, 60] is 1/15 per second.
        let s: Vec<(i64, f64)> = (1..=4).map(|i| (i * 15_000_000_000, i as f64)).collect();
        let r = over_time(Func::Rate, &s, 0, 60_000_000_000, 60_000_000_000, &[]).unwrap().unwrap();
        assert!((r - 1.0 / 15.0).abs() < 1e-12, "{r}");
    }

    #[test]
    fn bucket_quantile_interpolates() {
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        assert!((bucket_quantile(0.5, &mut b) - 0.1).abs() < 1e-12);
        let mut b = vec![(1.0, 0.0), (2.0, 10.0), (f64::INFINITY, 10.0)];
        assert!((bucket_quantile(0.5, &mut b) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn go_min_max_keep_nan() {
        assert!(go_max(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert!(go_min(1.0, f64::NAN).is_nan());
    }
}
