//! The aggregates of one (series, field) over one window: count, sum, min, max, first, last, and the
//! settings of the mergeable quantile sketch kept beside them (DDSketch, relative accuracy
//! configurable).

use sketches_ddsketch::{Config, DDSketch};
pub use yaffle_core::Aggregate;
use yaffle_store::sketch;

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
    /// An empty sketch of these settings.
    pub fn new_sketch(&self) -> DDSketch {
        DDSketch::new(self.ddsketch_config())
    }

    /// The settings as the sketch crate takes them.
    pub fn ddsketch_config(&self) -> Config {
        sketch::config(self.relative_accuracy, self.max_bins)
    }

    fn sketch_of(&self, values: &[f64]) -> DDSketch {
        sketch::sketch_of(values, &self.ddsketch_config())
    }
}

/// A window's quantile sketch.
#[derive(Clone)]
pub(crate) struct Sketch(pub(crate) DDSketch);

/// Values held as they are, at most this many, before a window's quantiles turn into a sketch: no more
/// than the 1 KiB a sketch's dense store allocates for its first bins.
pub(crate) const RAW_VALUES: usize = 128;

/// The quantiles of one (series, field) in one open window: its values themselves while they are
/// few, a [`Sketch`] past [`RAW_VALUES`] (most windows of a 10 s scrape never get there: 6 values a
/// minute, 30 in five). The sketch built from the values has the same bins as one fed value by value.
#[derive(Debug)]
pub(crate) enum Quantiles {
    /// No value yet, or a few.
    Values(Vec<f64>),
    /// A sketch of more.
    Sketch(Box<Sketch>),
}

impl Default for Quantiles {
    fn default() -> Self {
        Quantiles::Values(Vec::new())
    }
}

impl Quantiles {
    /// Adds values.
    pub(crate) fn extend(&mut self, values: &[f64], config: &SketchConfig) {
        match self {
            Quantiles::Values(held) if held.len() + values.len() <= RAW_VALUES => held.extend_from_slice(values),
            _ => {
                let sketch = self.sketch(config);
                values.iter().for_each(|&v| sketch.add(v));
            }
        }
    }

    /// Folds `other`'s values into this one.
    pub(crate) fn merge(&mut self, other: &Quantiles, config: &SketchConfig) {
        match other {
            Quantiles::Values(values) => self.extend(values, config),
            Quantiles::Sketch(s) => self.sketch(config).merge(&s.0).expect("sketches of one configuration merge"),
        }
    }

    /// The sketch, the values turned into one first.
    pub(crate) fn sketch(&mut self, config: &SketchConfig) -> &mut DDSketch {
        if let Quantiles::Values(values) = self {
            *self = Quantiles::Sketch(Box::new(Sketch(config.sketch_of(values))));
        }
        let Quantiles::Sketch(s) = self else { unreachable!("turned into a sketch above") };
        &mut s.0
    }

    /// The sketch of the values held and `more` as the rollups' column stores it, empty when there
    /// are none.
    pub(crate) fn finish(self, more: &[f64], config: &Config) -> String {
        match self {
            Quantiles::Values(held) if held.is_empty() && more.is_empty() => String::new(),
            Quantiles::Values(held) if held.is_empty() => sketch::encode_values(more, config),
            Quantiles::Values(mut held) => {
                held.extend_from_slice(more);
                sketch::encode_values(&held, config)
            }
            Quantiles::Sketch(mut s) => {
                more.iter().for_each(|&v| s.0.add(v));
                sketch::encode(&s.0)
            }
        }
    }

    /// Whether no value was added.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Quantiles::Values(v) if v.is_empty())
    }
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch").field("count", &self.0.count()).field("bins", &self.0.length()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_are_held_as_they_are_and_end_as_the_sketch_of_them() {
        let c = SketchConfig::default();
        let values: Vec<f64> = (0..300).map(|i| (i as f64 * 0.77).cos() * 50.0 + 60.0).collect();
        let mut whole = c.new_sketch();
        values.iter().for_each(|&v| whole.add(v));
        // Fed value by value, and merged from parts that are raw, sketched, or some of each.
        let mut fed = Quantiles::default();
        assert!(fed.is_empty());
        values.iter().for_each(|&v| fed.extend(&[v], &c));
        let (mut few, mut many, mut rest) = (Quantiles::default(), Quantiles::default(), Quantiles::default());
        values[..10].iter().for_each(|&v| few.extend(&[v], &c));
        values[10..250].iter().for_each(|&v| many.extend(&[v], &c));
        values[250..].iter().for_each(|&v| rest.extend(&[v], &c));
        assert!(matches!(few, Quantiles::Values(_)) && matches!(many, Quantiles::Sketch(_)));
        few.merge(&many, &c);
        few.merge(&rest, &c);
        // And finished with values that were held elsewhere.
        let mut most = Quantiles::default();
        values[..290].chunks(60).for_each(|part| most.extend(part, &c));
        let d = c.ddsketch_config();
        for stored in [fed.finish(&[], &d), few.finish(&[], &d), most.finish(&values[290..], &d)] {
            let q = sketch::decode(&stored).unwrap();
            assert_eq!(q.count(), whole.count());
            assert_eq!((q.min(), q.max()), (whole.min(), whole.max()));
            for p in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(q.quantile(p).unwrap(), whole.quantile(p).unwrap(), "q{p}");
            }
        }
        // Few values, some held and some handed in at the end, stored as their sketch is.
        let mut held = Quantiles::default();
        held.extend(&values[..40], &c);
        assert_eq!(held.finish(&values[40..100], &d), sketch::encode(&c.sketch_of(&values[..100])));
        assert_eq!(Quantiles::default().finish(&[], &d), "");
        assert_eq!(Quantiles::default().finish(&values[..5], &d), sketch::encode(&c.sketch_of(&values[..5])));
    }

    #[test]
    fn merged_sketches_answer_quantiles_within_the_accuracy() {
        let c = SketchConfig::default();
        let values: Vec<f64> = (0..1000).map(|i| (i as f64 * 1.37).sin() * 100.0 + 101.0).collect();
        let (mut left, mut right) = (c.new_sketch(), c.new_sketch());
        values[..400].iter().for_each(|&v| left.add(v));
        values[400..].iter().for_each(|&v| right.add(v));
        left.merge(&right).unwrap();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.1, 0.5, 0.9, 0.99] {
            let exact = sorted[((sorted.len() - 1) as f64 * q) as usize];
            let got = left.quantile(q).unwrap().unwrap();
            assert!((got - exact).abs() <= exact.abs() * 0.011, "q{q}: {got} vs {exact}");
        }
    }
}
