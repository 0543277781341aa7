//! Series identity: the canonical key of a series and its stable 64-bit id.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use crate::escape;

/// The identity of a series: the database it was written to, its measurement and its tags sorted by key.
///
/// Two points belong to the same series exactly when their keys are equal. Tags are kept sorted (by byte
/// order of the key, as InfluxDB sorts them), so the canonical form does not depend on the order a client
/// sent them in. The strings live back to back in one buffer: building a key costs two allocations
/// however many tags it has (a downsampling worker builds one per rollup row it emits).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// The database, the measurement, then each tag's key and value.
    text: Box<str>,
    /// Where each of those strings ends in `text`.
    ends: Box<[u32]>,
}

impl SeriesKey {
    /// Builds a key, sorting `tags` by key. Tag keys must be unique (the parsers check it, with
    /// [`SeriesKey::duplicate_tag`]).
    pub fn new(database: impl AsRef<str>, measurement: impl AsRef<str>, tags: Vec<(String, String)>) -> Self {
        Self::from_tags(database.as_ref(), measurement.as_ref(), tags)
    }

    /// Like [`SeriesKey::new`], from any strings (borrowed, unescaped in place, ...).
    pub fn from_tags<K: AsRef<str>, V: AsRef<str>>(database: &str, measurement: &str, mut tags: Vec<(K, V)>) -> Self {
        tags.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        Self::from_sorted_tags(database, measurement, tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }

    /// Builds a key from tags already sorted by key.
    pub fn from_sorted_tags<'s>(
        database: &str,
        measurement: &str,
        tags: impl ExactSizeIterator<Item = (&'s str, &'s str)> + Clone,
    ) -> Self {
        debug_assert!(tags.clone().zip(tags.clone().skip(1)).all(|(a, b)| a.0 <= b.0), "tags sorted by key");
        let len = database.len() + measurement.len() + tags.clone().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(2 + 2 * tags.len());
        let mut push = |s: &str| {
            text.push_str(s);
            ends.push(u32::try_from(text.len()).expect("a series key is under 4 GiB"));
        };
        push(database);
        push(measurement);
        for (k, v) in tags {
            push(k);
            push(v);
        }
        Self { text: text.into_boxed_str(), ends: ends.into_boxed_slice() }
    }

    /// The `i`th string: database, measurement, then tag keys and values in turn.
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The database (InfluxDB `db`, `bucket`, or the configured default for remote_write).
    pub fn database(&self) -> &str {
        self.part(0)
    }

    /// The measurement (for remote_write samples, the metric name).
    pub fn measurement(&self) -> &str {
        self.part(1)
    }

    /// Tags (key, value) sorted by key.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        (0..self.tag_count()).map(|i| (self.part(2 + 2 * i), self.part(3 + 2 * i)))
    }

    fn tag_count(&self) -> usize {
        (self.ends.len() - 2) / 2
    }

    /// The value of tag `key`, if the series has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.tag_count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.part(2 + 2 * mid).cmp(key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(self.part(3 + 2 * mid)),
            }
        }
        None
    }

    /// A tag key the key holds twice, if any (keys are sorted, so twins are neighbours).
    pub fn duplicate_tag(&self) -> Option<&str> {
        self.tags().zip(self.tags().skip(1)).find(|(a, b)| a.0 == b.0).map(|(a, _)| a.0)
    }

    /// The canonical form of measurement and tags: `measurement,k1=v1,k2=v2` with line-protocol
    /// escaping plus escaped backslashes (data format 2; see `escape`), so that it is injective. The database is not part of this string; see [`SeriesKey::id`].
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + self.tags().len() * 4);
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        escape::measurement(self.measurement(), out);
        for (k, v) in self.tags() {
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
        let mut buf = String::with_capacity(4 + self.text.len() + self.tags().len() * 4);
        self.write_canonical(&mut buf);
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&(self.database().len() as u32).to_le_bytes());
        hasher.update(self.database().as_bytes());
        hasher.update(buf.as_bytes());
        SeriesId(hasher.digest())
    }
}

impl fmt::Display for SeriesKey {
    /// `database/measurement,k=v`: the form used in the store's `series_key` column and in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.database(), self.canonical())
    }
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeriesKey")
            .field("database", &self.database())
            .field("measurement", &self.measurement())
            .field("tags", &self.tags().collect::<Vec<_>>())
            .finish()
    }
}

/// Database, then measurement, then tags in order: the order of the parts, not of the buffer.
impl Ord for SeriesKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.database(), self.measurement())
            .cmp(&(other.database(), other.measurement()))
            .then_with(|| self.tags().cmp(other.tags()))
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
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
    fn parts_keep_their_bounds_and_order_compares_parts() {
        let key = SeriesKey::new("", "m", tags(&[("b", ""), ("a", "x"), ("c", "yz")]));
        assert_eq!((key.database(), key.measurement()), ("", "m"));
        assert_eq!(key.tags().collect::<Vec<_>>(), [("a", "x"), ("b", ""), ("c", "yz")]);
        assert_eq!((key.tag("a"), key.tag("b"), key.tag("c"), key.tag("")), (Some("x"), Some(""), Some("yz"), None));
        assert_eq!(key.duplicate_tag(), None);
        assert_eq!(SeriesKey::new("d", "m", tags(&[("k", "1"), ("j", "0"), ("k", "2")])).duplicate_tag(), Some("k"));
        // The parts are compared, not the buffer they share.
        assert!(SeriesKey::new("a", "bc", vec![]) < SeriesKey::new("ab", "c", vec![]));
        assert!(SeriesKey::new("a", "b", tags(&[("k", "v")])) > SeriesKey::new("a", "b", vec![]));
        assert_ne!(SeriesKey::new("a", "bc", vec![]), SeriesKey::new("ab", "c", vec![]));
    }

    /// The two series that shared a key and id before data format 2.
    #[test]
    fn a_trailing_backslash_cannot_pass_for_a_separator() {
        let a = SeriesKey::new("db", r"coll\", tags(&[("a", "b")]));
        let b = SeriesKey::new("db", "coll,a=b", vec![]);
        assert_eq!(a.canonical(), r"coll\\,a=b");
        assert_eq!(b.canonical(), r"coll\,a=b");
        assert_ne!(a.id(), b.id());
    }

    /// Reads a canonical key back into its parts: a left inverse, so the canonical form is injective.
    fn parse_canonical(s: &str) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut in_key = false;
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => parts.last_mut().unwrap().push(chars.next().expect("no escape at the end")),
                ',' if !in_key => {
                    parts.push(String::new());
                    in_key = true;
                }
                '=' if in_key => {
                    parts.push(String::new());
                    in_key = false;
                }
                c => parts.last_mut().unwrap().push(c),
            }
        }
        parts
    }

    proptest::proptest! {
        /// Every key reads back from its canonical form, over an alphabet of nothing but separators,
        /// escapes and one letter: two different series never share a key (nor, but for hash
        /// collisions, an id).
        #[test]
        fn the_canonical_key_is_injective(
            m in r"[a\\,= ]{0,5}",
            t in proptest::collection::btree_map(r"[a\\,= ]{1,4}", r"[a\\,= ]{0,4}", 0..4),
        ) {
            let key = SeriesKey::new("db", &m, t.clone().into_iter().collect());
            let mut want = vec![m];
            for (k, v) in t {
                want.extend([k, v]);
            }
            proptest::prop_assert_eq!(parse_canonical(&key.canonical()), want);
        }
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
            // Data format 2: backslashes are escaped (`coll\\,a=b`, `disk,path=C:\\Windows\\Temp`).
            (SeriesKey::new("db", r"coll\", tags(&[("a", "b")])), 0xdcbc_83da_6b5b_f0ea),
            (SeriesKey::new("db", "coll,a=b", vec![]), 0xc425_6621_1955_c81b),
            (SeriesKey::new("telegraf", "disk", tags(&[("path", r"C:\Windows\Temp")])), 0x3b3f_72b2_a6bd_ea73),
        ];
        for (key, want) in cases {
            assert_eq!(key.id().0, want, "{key}");
        }
    }
}
