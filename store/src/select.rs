//! Reading raw samples by series for the query engine: the selection pushed down to a backend, and
//! what it returns.

use yaffle_core::Window;
use yaffle_core::point::PROMETHEUS_VALUE_FIELD;

/// Which raw samples to read: one database, optionally only some (measurement, field) pairs, a
/// time span (ns, both ends inclusive). Only numeric values are read (strings and booleans are not
/// samples); staleness markers are returned as they were written.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSelect {
    /// The database (`db`, `bucket`, or the remote_write database).
    pub database: String,
    /// The (measurement, field) pairs to read; `None` reads every one.
    pub names: Option<Vec<(String, String)>>,
    /// Tags every series read must have with these values (pushed down where the backend can).
    pub tags: Vec<(String, String)>,
    /// Earliest sample time.
    pub start_ns: i64,
    /// Latest sample time.
    pub end_ns: i64,
    /// False to read only which series have samples in the span (labels, no samples).
    pub with_samples: bool,
    /// Samples (or windows) the answer may hold; past it the read fails with
    /// [`crate::StoreError::QueryLimit`].
    pub max_samples: usize,
    /// Read the rollups of this resolution (seconds) instead of raw points: windows starting up to
    /// a resolution before `start_ns`, so every window holding samples of the span is read.
    pub resolution_s: Option<u32>,
}

/// One (series, field) with its samples, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SelectedSeries {
    /// Measurement (the metric name for remote_write).
    pub measurement: String,
    /// Field key.
    pub field: String,
    /// Tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// `(time ns, value)`, sorted by time; empty when samples were not asked for or rollups were.
    pub samples: Vec<(i64, f64)>,
    /// Rollup windows, sorted by start, when a resolution was asked for.
    pub windows: Vec<Window>,
}

/// The answer to a [`SeriesSelect`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selected {
    /// The series read.
    pub series: Vec<SelectedSeries>,
    /// Why the answer may be incomplete (a ClickHouse shard that did not answer); empty when whole.
    pub warnings: Vec<String>,
}

/// The (measurement, field) pairs a metric name can address: `<measurement>_<field>` split at each
/// underscore, and the bare measurement with the `value` field ([`yaffle_core::point::metric_name`]
/// read backwards).
pub fn name_candidates(name: &str) -> Vec<(String, String)> {
    let mut out = vec![(name.to_string(), PROMETHEUS_VALUE_FIELD.to_string())];
    for (i, _) in name.match_indices('_') {
        let (m, f) = (&name[..i], &name[i + 1..]);
        if !m.is_empty() && !f.is_empty() && f != PROMETHEUS_VALUE_FIELD {
            out.push((m.to_string(), f.to_string()));
        }
    }
    out
}

/// Sorts each series' samples by time (files and shards are read in any order) and, of two samples
/// at the same time, keeps the one read last.
pub(crate) fn finish(series: &mut [SelectedSeries]) {
    for s in series {
        s.windows.sort_by_key(|w| w.start_ns);
        s.samples.sort_by_key(|&(t, _)| t);
        s.samples.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                *earlier = *later;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_every_underscore() {
        let c = name_candidates("cpu_usage_user");
        assert!(c.contains(&("cpu".into(), "usage_user".into())));
        assert!(c.contains(&("cpu_usage".into(), "user".into())));
        assert!(c.contains(&("cpu_usage_user".into(), "value".into())));
        assert_eq!(c.len(), 3);
        // `x_value` is not the field `value` of `x` (that one is named `x`).
        assert_eq!(name_candidates("x_value"), vec![("x_value".to_string(), "value".to_string())]);
    }
}
