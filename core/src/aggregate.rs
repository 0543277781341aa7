//! The aggregate of a series' values in one rollup window, shared by the downsampler that builds
//! it, the store that keeps it and the query engine that reads it.

/// Count, sum, min, max, first and last of the values of one window, in 64 bytes.
///
/// `first` is the value with the smallest timestamp and `last` the one with the largest; between
/// points with equal timestamps, the one read first from the log is `first` and the one read last is
/// `last`, so a replay of the same log gives the same answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Number of values (0: none yet, the other fields are meaningless).
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
}

impl Aggregate {
    /// No value.
    pub const EMPTY: Aggregate =
        Aggregate { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, first: (0, 0.0), last: (0, 0.0) };

    /// The aggregate of one value.
    pub fn new(timestamp: i64, value: f64) -> Self {
        Self { count: 1, sum: value, min: value, max: value, first: (timestamp, value), last: (timestamp, value) }
    }

    /// Adds a value.
    #[inline]
    pub fn add(&mut self, timestamp: i64, value: f64) {
        if self.count == 0 {
            *self = Self::new(timestamp, value);
            return;
        }
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
    }

    /// Folds `other`, whose values came after this one's in the log, into this one.
    pub fn merge(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
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
    }
}

/// One rollup window: its start and the aggregate of the values in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The window's start (ns).
    pub start_ns: i64,
    /// Its values' aggregate.
    pub aggregate: Aggregate,
}

impl Window {
    /// A window of one sample (a raw sample among rollup windows).
    pub fn of(t: i64, v: f64) -> Self {
        Window { start_ns: t, aggregate: Aggregate::new(t, v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_follow_timestamps_then_log_order() {
        let mut a = Aggregate::EMPTY;
        for (t, v) in [(20, 2.0), (10, 1.0), (30, 3.0), (30, 4.0), (10, 5.0)] {
            a.add(t, v);
        }
        assert_eq!((a.count, a.sum, a.min, a.max), (5, 15.0, 1.0, 5.0));
        assert_eq!(a.first, (10, 1.0));
        assert_eq!(a.last, (30, 4.0));
        assert_eq!(std::mem::size_of::<Aggregate>(), 64);
    }

    #[test]
    fn merged_aggregates_equal_one_over_all_values() {
        let values: Vec<(i64, f64)> = (0..1000).map(|i| (i * 7 % 1000, ((i * 37) % 201 - 100) as f64)).collect();
        let mut whole = Aggregate::EMPTY;
        values.iter().for_each(|&(t, v)| whole.add(t, v));
        let (mut left, mut right) = (Aggregate::EMPTY, Aggregate::EMPTY);
        values[..400].iter().for_each(|&(t, v)| left.add(t, v));
        values[400..].iter().for_each(|&(t, v)| right.add(t, v));
        left.merge(&right);
        left.merge(&Aggregate::EMPTY);
        assert_eq!(left, whole);
        let mut empty = Aggregate::EMPTY;
        empty.merge(&whole);
        assert_eq!(empty, whole);
    }
}
