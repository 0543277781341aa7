//! Range functions, with Prometheus' arithmetic (including `rate`'s extrapolation).

use super::RangeFn;

/// `func` over the samples of one series in `[at - range, at]` (oldest first, no staleness markers);
/// `None` when the function yields no element for this series.
pub(super) fn over_time(
    func: RangeFn,
    samples: &[(i64, f64)],
    at: i64,
    range_ns: i64,
    param: Option<f64>,
) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let values = || samples.iter().map(|&(_, v)| v);
    Some(match func {
        RangeFn::Count => samples.len() as f64,
        RangeFn::Last => samples[samples.len() - 1].1,
        RangeFn::Sum => values().sum(),
        RangeFn::Avg => {
            let mut mean = 0.0;
            for (i, v) in values().enumerate() {
                mean += (v - mean) / (i + 1) as f64;
            }
            mean
        }
        RangeFn::Min => values().fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        RangeFn::Max => values().fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        RangeFn::Quantile => {
            let mut vals: Vec<f64> = values().collect();
            quantile(param.unwrap_or(f64::NAN), &mut vals)
        }
        RangeFn::Rate => extrapolated(samples, at, range_ns, true, true)?,
        RangeFn::Increase => extrapolated(samples, at, range_ns, true, false)?,
        RangeFn::Delta => extrapolated(samples, at, range_ns, false, false)?,
    })
}

/// The φ-quantile of `values` by linear interpolation between closest ranks, as PromQL computes it.
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
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

/// `rate`, `increase` and `delta`: the change over the samples, corrected for counter resets and
/// extrapolated towards the ends of the range when the samples stop short of them (by at most half a
/// sample interval, and never below zero for counters).
fn extrapolated(samples: &[(i64, f64)], at: i64, range_ns: i64, counter: bool, per_second: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[samples.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut previous = 0.0;
        for &(_, v) in samples {
            if v < previous {
                result += previous;
            }
            previous = v;
        }
    }
    let secs = |ns: i64| ns as f64 / 1e9;
    let mut to_start = secs(first_t - (at - range_ns));
    let to_end = secs(at - last_t);
    let sampled = secs(last_t - first_t);
    let average_step = sampled / (samples.len() - 1) as f64;
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_step * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { average_step / 2.0 };
    interval += if to_end < threshold { to_end } else { average_step / 2.0 };
    result *= interval / sampled;
    if per_second {
        result /= secs(range_ns);
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let mut v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(0.0, &mut v), 1.0);
        assert_eq!(quantile(1.0, &mut v), 4.0);
        assert_eq!(quantile(2.0, &mut v), f64::INFINITY);
    }

    #[test]
    fn rate_of_a_steady_counter_is_its_slope() {
        // 1 per second, sampled every 15 s over a 60 s range ending at a sample.
        let samples: Vec<(i64, f64)> = (0..=4).map(|i| (i * 15 * S, (i * 15) as f64)).collect();
        let rate = over_time(RangeFn::Rate, &samples, 60 * S, 60 * S, None).unwrap();
        assert!((rate - 1.0).abs() < 1e-9, "{rate}");
        let inc = over_time(RangeFn::Increase, &samples, 60 * S, 60 * S, None).unwrap();
        assert!((inc - 60.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn counter_resets_are_added_back() {
        let samples = [(0, 10.0), (10 * S, 20.0), (20 * S, 5.0), (30 * S, 15.0)];
        let inc = over_time(RangeFn::Increase, &samples, 30 * S, 30 * S, None).unwrap();
        // Raw change 5, plus the 20 lost at the reset = 25 over 30 s; extrapolated to the start by
        // at most the time to zero (30 * 10/25 = 12 s > 0 s needed): no extrapolation needed.
        assert!((inc - 25.0).abs() < 1e-9, "{inc}");
        let delta = over_time(RangeFn::Delta, &samples, 30 * S, 30 * S, None).unwrap();
        assert!((delta - 5.0).abs() < 1e-9, "{delta}");
    }

    #[test]
    fn one_sample_has_no_rate() {
        assert_eq!(over_time(RangeFn::Rate, &[(0, 1.0)], 0, 60 * S, None), None);
        assert_eq!(over_time(RangeFn::Count, &[(0, 1.0)], 0, 60 * S, None), Some(1.0));
    }
}
