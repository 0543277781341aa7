//! Distribution strategies (from Ctrip's InCluster): which shard, Kafka partition or evaluator a point
//! goes to.
//!
//! A strategy maps a series to a 64-bit **route**; a destination among `n` is `route % n`
//! ([`Distribution::target`]). Every router in Yaffle uses this one function, and the ClickHouse store
//! writes the route into each row so its Distributed table shards by the very same value.
//!
//! | strategy | route | keeps together |
//! | --- | --- | --- |
//! | `series` (default) | the series id | one series |
//! | `measurement` | XXH3 of database and measurement | every series of a measurement (cross-series rules) |
//! | `measurement+tags` | XXH3 of database, measurement and the values of the named tags | e.g. every series of a host |
//!
//! Routes are hashes of explicitly fed bytes (length-prefixed, little-endian lengths), pinned by tests,
//! so they never change with the Rust version and other languages can compute them.
//!
//! ```
//! use yaffle_core::SeriesKey;
//! use yaffle_core::strategy::{Distribution, DistributionConfig, Strategy};
//!
//! let config = DistributionConfig { strategy: Strategy::Measurement, ..DistributionConfig::default() };
//! let distribution = Distribution::new(&config).unwrap();
//! let a = SeriesKey::new("db", "cpu", vec![("host".into(), "a".into())]);
//! let b = SeriesKey::new("db", "cpu", vec![("host".into(), "b".into())]);
//! assert_eq!(distribution.route(&a, a.id()), distribution.route(&b, b.id()));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{SeriesId, SeriesKey};

/// The kinds of strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// Route by series id.
    #[default]
    #[serde(rename = "series")]
    Series,
    /// Route by database and measurement.
    #[serde(rename = "measurement")]
    Measurement,
    /// Route by database, measurement and the values of the tags named in `tags`.
    #[serde(rename = "measurement+tags")]
    MeasurementTags,
}

/// One strategy with its tag keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    /// `series`, `measurement` or `measurement+tags`.
    pub strategy: Strategy,
    /// Tag keys for `measurement+tags`, in the order they are hashed.
    pub tags: Vec<String>,
}

/// A global strategy with per-measurement overrides, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributionConfig {
    /// The strategy for measurements without an override.
    pub strategy: Strategy,
    /// Tag keys when `strategy` is `measurement+tags`.
    pub tags: Vec<String>,
    /// Per-measurement strategies, by measurement name (in every database).
    pub overrides: BTreeMap<String, StrategyConfig>,
}

/// A validated [`DistributionConfig`]: maps series to routes.
#[derive(Debug, Clone)]
pub struct Distribution {
    default: Rule,
    overrides: BTreeMap<String, Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Series,
    Measurement,
    MeasurementTags(Vec<String>),
}

impl Rule {
    fn new(strategy: Strategy, tags: &[String], what: &str) -> Result<Self, String> {
        match strategy {
            Strategy::MeasurementTags if tags.is_empty() => {
                Err(format!("{what}: strategy \"measurement+tags\" needs at least one tag key in `tags`"))
            }
            Strategy::MeasurementTags => Ok(Rule::MeasurementTags(tags.to_vec())),
            _ if !tags.is_empty() => Err(format!("{what}: `tags` only applies to strategy \"measurement+tags\"")),
            Strategy::Series => Ok(Rule::Series),
            Strategy::Measurement => Ok(Rule::Measurement),
        }
    }
}

impl Distribution {
    /// Validates a configuration.
    pub fn new(config: &DistributionConfig) -> Result<Self, String> {
        let default = Rule::new(config.strategy, &config.tags, "distribution")?;
        let overrides = config
            .overrides
            .iter()
            .map(|(m, c)| Ok((m.clone(), Rule::new(c.strategy, &c.tags, &format!("distribution.overrides.{m}"))?)))
            .collect::<Result<_, String>>()?;
        Ok(Self { default, overrides })
    }

    /// The route of a series (`id` is `series.id()`, carried with the point).
    pub fn route(&self, series: &SeriesKey, id: SeriesId) -> u64 {
        let rule = if self.overrides.is_empty() {
            &self.default
        } else {
            self.overrides.get(series.measurement()).unwrap_or(&self.default)
        };
        match rule {
            Rule::Series => id.0,
            Rule::Measurement => measurement_route(series.database(), series.measurement(), &[]),
            Rule::MeasurementTags(keys) => {
                let values: Vec<Option<&str>> = keys.iter().map(|k| series.tag(k)).collect();
                measurement_route(series.database(), series.measurement(), &values)
            }
        }
    }

    /// Which of `n` destinations a route goes to.
    pub fn target(route: u64, n: usize) -> usize {
        (route % n.max(1) as u64) as usize
    }
}

/// XXH3-64 (seed 0) of: `u32` LE length + database, `u32` LE length + measurement, then per named tag a
/// presence byte (0 absent, 1 present) and, if present, `u32` LE length + value.
fn measurement_route(database: &str, measurement: &str, tag_values: &[Option<&str>]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in [database, measurement] {
        h.update(&(s.len() as u32).to_le_bytes());
        h.update(s.as_bytes());
    }
    for v in tag_values {
        match v {
            None => h.update(&[0]),
            Some(v) => {
                h.update(&[1]);
                h.update(&(v.len() as u32).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str, tags: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new("db", m, tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn config(strategy: Strategy, tags: &[&str]) -> DistributionConfig {
        DistributionConfig { strategy, tags: tags.iter().map(|t| t.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn series_routes_by_series_id() {
        let d = Distribution::new(&DistributionConfig::default()).unwrap();
        let k = key("cpu", &[("host", "a")]);
        assert_eq!(d.route(&k, k.id()), k.id().0);
    }

    /// Known values, computed independently with Python's `xxhash.xxh3_64` over the documented bytes:
    /// `xxh3_64(b"\x02\0\0\0db\x03\0\0\0cpu")` and the same followed by `b"\x01\x01\0\0\0a"`.
    #[test]
    fn routes_are_pinned() {
        let m = Distribution::new(&config(Strategy::Measurement, &[])).unwrap();
        let k = key("cpu", &[("host", "a"), ("dc", "x")]);
        assert_eq!(m.route(&k, k.id()), 0x5a09_5e6a_fe84_8fc9);
        let t = Distribution::new(&config(Strategy::MeasurementTags, &["host"])).unwrap();
        assert_eq!(t.route(&k, k.id()), 0xf4ee_568e_7ec5_cd69);
    }

    #[test]
    fn measurement_keeps_a_measurement_together_and_tags_split_it() {
        let m = Distribution::new(&config(Strategy::Measurement, &[])).unwrap();
        let t = Distribution::new(&config(Strategy::MeasurementTags, &["host"])).unwrap();
        let a1 = key("cpu", &[("host", "a"), ("core", "1")]);
        let a2 = key("cpu", &[("host", "a"), ("core", "2")]);
        let b1 = key("cpu", &[("host", "b"), ("core", "1")]);
        assert_eq!(m.route(&a1, a1.id()), m.route(&b1, b1.id()));
        assert_eq!(t.route(&a1, a1.id()), t.route(&a2, a2.id()));
        assert_ne!(t.route(&a1, a1.id()), t.route(&b1, b1.id()));
        // An absent tag differs from an empty one.
        let none = key("cpu", &[]);
        let empty = key("cpu", &[("host", "")]);
        assert_ne!(t.route(&none, none.id()), t.route(&empty, empty.id()));
    }

    #[test]
    fn overrides_apply_per_measurement() {
        let mut c = DistributionConfig::default();
        c.overrides.insert("cpu".into(), StrategyConfig { strategy: Strategy::Measurement, tags: vec![] });
        let d = Distribution::new(&c).unwrap();
        let cpu = key("cpu", &[("host", "a")]);
        let mem = key("mem", &[("host", "a")]);
        assert_eq!(d.route(&mem, mem.id()), mem.id().0);
        assert_ne!(d.route(&cpu, cpu.id()), cpu.id().0);
        assert_eq!(d.route(&cpu, cpu.id()), d.route(&key("cpu", &[]), key("cpu", &[]).id()));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let e = Distribution::new(&config(Strategy::MeasurementTags, &[])).unwrap_err();
        assert!(e.contains("needs at least one tag key"), "{e}");
        let mut c = DistributionConfig::default();
        c.overrides.insert("cpu".into(), StrategyConfig { strategy: Strategy::Series, tags: vec!["host".into()] });
        let e = Distribution::new(&c).unwrap_err();
        assert!(e.contains("distribution.overrides.cpu"), "{e}");
    }

    #[test]
    fn targets_spread_routes() {
        assert_eq!(Distribution::target(7, 2), 1);
        assert_eq!(Distribution::target(u64::MAX, 4), 3);
        assert_eq!(Distribution::target(5, 0), 0);
    }
}
