//! Series identity: the canonical key of a series and its stable 64-bit id.

use std::fmt;
use std::sync::Arc;

use crate::escape;

/// The identity of a series: the database it was written to, its measurement and its tags sorted by key.
///
/// Two points belong to the same series exactly when their keys are equal. Tags are kept sorted (by byte
/// order of the key, as InfluxDB sorts them), so the canonical form does not depend on the order a client
/// sent them in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    database: String,
    measurement: String,
    tags: Vec<(String, String)>,
}

impl SeriesKey {
    /// Builds a key, sorting `tags` by key. Tag keys must be unique (the parsers check it).
    pub fn new(database: impl Into<String>, measurement: impl Into<String>, mut tags: Vec<(String, String)>) -> Self {
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self { database: database.into(), measurement: measurement.into(), tags }
    }

    /// The database (InfluxDB `db`, `bucket`, or the configured default for remote_write).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The measurement (for remote_write samples, the metric name).
    pub fn measurement(&self) -> &str {
        &self.measurement
    }

    /// Tags sorted by key.
    pub fn tags(&self) -> &[(String, String)] {
        &self.tags
    }

    /// The value of tag `key`, if the series has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.tags[i].1.as_str())
    }

    /// The canonical line-protocol form of measurement and tags: `measurement,k1=v1,k2=v2` with
    /// line-protocol escaping. The database is not part of this string; see [`SeriesKey::id`].
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(self.measurement.len() + self.tags.len() * 16);
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        escape::measurement(&self.measurement, out);
        for (k, v) in &self.tags {
            out.push(',');
            escape::tag(k, out);
            out.push('=');
            escape::tag(v, out);
        }
    }

    /// The stable id of this series.
    ///
    /// It is XXH3-64 (seed 0) of explicitly fed bytes: the database's length as a little-endian `u32`,
    /// the database, then the canonical string. The length prefix keeps `("a", "bc")` and `("ab", "c")`
    /// apart. `std::hash::Hash` is never used, so the value does not change with the Rust version,
    /// and tiers written in other languages can compute it.
    pub fn id(&self) -> SeriesId {
        let mut buf = String::with_capacity(4 + self.database.len() + self.measurement.len() + self.tags.len() * 16);
        self.write_canonical(&mut buf);
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&(self.database.len() as u32).to_le_bytes());
        hasher.update(self.database.as_bytes());
        hasher.update(buf.as_bytes());
        SeriesId(hasher.digest())
    }
}

impl fmt::Display for SeriesKey {
    /// `database/measurement,k=v`: the form used in the store's `series_key` column and in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.database, self.canonical())
    }
}

/// A stable 64-bit hash of a [`SeriesKey`], computed once at ingest and carried with the point through the
/// log, Kafka and the store, so that no later tier hashes strings again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u64);

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A shared series key with its id, as points carry it.
pub type SharedSeries = Arc<SeriesKey>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tags_are_sorted_and_canonical_form_is_escaped() {
        let key = SeriesKey::new("db", "cpu load", tags(&[("z", "a,b"), ("a", "x=y")]));
        assert_eq!(key.canonical(), r"cpu\ load,a=x\=y,z=a\,b");
        assert_eq!(key.tag("z"), Some("a,b"));
        assert_eq!(key.tag("q"), None);
        assert_eq!(key.to_string(), r"db/cpu\ load,a=x\=y,z=a\,b");
    }

    #[test]
    fn tag_order_does_not_change_the_id() {
        let a = SeriesKey::new("db", "cpu", tags(&[("host", "a"), ("dc", "1")]));
        let b = SeriesKey::new("db", "cpu", tags(&[("dc", "1"), ("host", "a")]));
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn database_is_part_of_identity() {
        let a = SeriesKey::new("db1", "cpu", vec![]);
        let b = SeriesKey::new("db2", "cpu", vec![]);
        assert_ne!(a.id(), b.id());
        // The length prefix keeps a shifted boundary apart.
        assert_ne!(SeriesKey::new("a", "bc", vec![]).id(), SeriesKey::new("ab", "c", vec![]).id());
    }

    /// These values are part of the on-disk and on-wire contract: changing them orphans stored series.
    /// They were computed independently with Python's `xxhash.xxh3_64` over the same bytes.
    #[test]
    fn ids_are_pinned() {
        let cases = [
            (SeriesKey::new("", "cpu", vec![]), 0xdf62_7c96_895e_76fd_u64),
            (SeriesKey::new("telegraf", "cpu", tags(&[("host", "a"), ("cpu", "cpu0")])), 0xe49a_2b9d_d288_c150),
            (
                SeriesKey::new("prometheus", "up", tags(&[("job", "node"), ("instance", "h:9100")])),
                0x738a_47ba_d60b_0314,
            ),
        ];
        for (key, want) in cases {
            assert_eq!(key.id().0, want, "{key}");
        }
    }
}
