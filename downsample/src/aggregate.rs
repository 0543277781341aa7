//! The aggregates of one (series, field) over one window: count, sum, min, max, first, last and a
//! mergeable quantile sketch (DDSketch, relative accuracy configurable).

use sketches_ddsketch::{Config, DDSketch};

/// The quantile sketch's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SketchConfig {
    /// A quantile read from the sketch is within this relative error of the true value (0.01 = 1 %).
    pub relative_accuracy: f64,
    /// Bins kept at most; past it the lowest bins are collapsed (bounds the sketch's size).
    pub max_bins: u32,
}

impl Default for SketchConfig {
    fn default() -> Self {
        Self { relative_accuracy: 0.01, max_bins: 2048 }
    }
}

impl SketchConfig {
    fn new_sketch(&self) -> DDSketch {
        // Values closer to zero than this are counted as zero: far below any metric's resolution.
        DDSketch::new(Config::new(self.relative_accuracy, self.max_bins, 1e-9))
    }
}

/// Count, sum, min, max, first and last of the values of one window, and optionally their sketch.
///
/// `first` is the value with the smallest timestamp and `last` the one with the largest; between
/// points with equal timestamps, the one read first from the log is `first` and the one read last is
/// `last`, so a replay of the same log gives the same answer.
#[derive(Clone)]
pub struct Aggregate {
    /// Number of values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// The value at the earliest timestamp, and that timestamp.
    pub first: (i64, f64),
    /// The value at the latest timestamp, and that timestamp.
    pub last: (i64, f64),
    /// The values' quantile sketch, when sketches are on.
    pub sketch: Option<Box<DDSketch>>,
}

impl std::fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregate")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("first", &self.first)
            .field("last", &self.last)
            .field("sketch_bins", &self.sketch.as_ref().map(|s| s.length()))
            .finish()
    }
}

impl Aggregate {
    /// The aggregate of one value.
    pub fn new(timestamp: i64, value: f64, sketch: Option<&SketchConfig>) -> Self {
        let sketch = sketch.map(|c| {
            let mut s = Box::new(c.new_sketch());
            s.add(value);
            s
        });
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
            first: (timestamp, value),
            last: (timestamp, value),
            sketch,
        }
    }

    /// Adds a value.
    pub fn add(&mut self, timestamp: i64, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if timestamp < self.first.0 {
            self.first = (timestamp, value);
        }
        if timestamp >= self.last.0 {
            self.last = (timestamp, value);
        }
        if let Some(s) = &mut self.sketch {
            s.add(value);
        }
    }

    /// Folds `other`, whose values came after this one's in the log, into this one.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 >= self.last.0 {
            self.last = other.last;
        }
        match (&mut self.sketch, &other.sketch) {
            (Some(a), Some(b)) => a.merge(b).expect("sketches of one configuration merge"),
            (None, Some(b)) => self.sketch = Some(b.clone()),
            _ => {}
        }
    }

    /// The `q` quantile (0 to 1) from the sketch, within its relative accuracy.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.as_ref().and_then(|s| s.quantile(q).ok().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_follow_timestamps_then_log_order() {
        let mut a = Aggregate::new(20, 2.0, None);
        a.add(10, 1.0);
        a.add(30, 3.0);
        a.add(30, 4.0);
        a.add(10, 5.0);
        assert_eq!((a.count, a.sum, a.min, a.max), (5, 15.0, 1.0, 5.0));
        assert_eq!(a.first, (10, 1.0));
        assert_eq!(a.last, (30, 4.0));
    }

    #[test]
    fn merged_aggregates_equal_one_over_all_values() {
        let c = SketchConfig::default();
        let values: Vec<(i64, f64)> = (0..1000).map(|i| (i * 7 % 1000, (i as f64 * 1.37).sin() * 100.0)).collect();
        let mut whole = Aggregate::new(values[0].0, values[0].1, Some(&c));
        for &(t, v) in &values[1..] {
            whole.add(t, v);
        }
        let mut left = Aggregate::new(values[0].0, values[0].1, Some(&c));
        for &(t, v) in &values[1..400] {
            left.add(t, v);
        }
        let mut right = Aggregate::new(values[400].0, values[400].1, Some(&c));
        for &(t, v) in &values[401..] {
            right.add(t, v);
        }
        left.merge(&right);
        assert_eq!(
            (left.count, left.min, left.max, left.first, left.last),
            (whole.count, whole.min, whole.max, whole.first, whole.last)
        );
        assert!((left.sum - whole.sum).abs() < 1e-9);
        let mut sorted: Vec<f64> = values.iter().map(|v| v.1).collect();
        sorted.sort_by(f64::total_cmp);
        for q in [0.1, 0.5, 0.9, 0.99] {
            let exact = sorted[((sorted.len() - 1) as f64 * q) as usize];
            let got = left.quantile(q).unwrap();
            assert!((got - exact).abs() <= exact.abs() * 0.011 + 1e-6, "q{q}: {got} vs {exact}");
        }
    }
}
