//! Label sets: sorted, shared, cheap to clone.

use std::fmt;
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A set of labels sorted by name. Cloning shares the allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// Builds a set from pairs in any order; a later duplicate name replaces an earlier one.
    pub fn new(mut pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        pairs.retain(|(_, v)| !v.is_empty());
        Self(pairs.into())
    }

    /// Builds a set from string pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::new(pairs.into_iter().map(|(k, v)| (Arc::from(k), Arc::from(v))).collect())
    }

    /// The value of a label, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name)).ok().map(|i| &*self.0[i].1)
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The shared pairs.
    pub fn pairs(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The set without `__name__` (shares the allocation when there is none).
    pub fn without_name(&self) -> Labels {
        if self.get(METRIC_NAME).is_none() {
            return self.clone();
        }
        Labels(self.0.iter().filter(|(k, _)| &**k != METRIC_NAME).cloned().collect())
    }

    /// The labels whose names are (`keep == true`) or are not in `names`, hashed: the grouping
    /// signature of `by`/`on` (keep) and `without`/`ignoring` (drop, which also drops `__name__`).
    pub fn signature(&self, names: &[String], keep: bool) -> u64 {
        let mut h = Xxh3::new();
        for (k, v) in self.0.iter() {
            let listed = names.iter().any(|n| n == &**k);
            let included = if keep { listed } else { !listed && &**k != METRIC_NAME };
            if included {
                h.update(&(k.len() as u32).to_le_bytes());
                h.update(k.as_bytes());
                h.update(&(v.len() as u32).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
        h.digest()
    }

    /// The labels [`Labels::signature`] hashes.
    pub fn project(&self, names: &[String], keep: bool) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| {
                    let listed = names.iter().any(|n| n == &**k);
                    if keep { listed } else { !listed && &**k != METRIC_NAME }
                })
                .cloned()
                .collect(),
        )
    }

    /// A stable hash of the whole set.
    pub fn fingerprint(&self) -> u64 {
        self.signature(&[], false) ^ self.get(METRIC_NAME).map_or(0, |n| xxhash_rust::xxh3::xxh3_64(n.as_bytes()))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Prometheus notation: `name{a="1", b="2"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.get(METRIC_NAME) {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (k, v) in self.iter().filter(|(k, _)| *k != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduplicated_and_empty_values_dropped() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.to_string(), r#"{a="1", b="3"}"#);
    }

    #[test]
    fn signatures_group_by_and_without() {
        let a = Labels::from_pairs([("__name__", "x"), ("job", "a"), ("instance", "1")]);
        let b = Labels::from_pairs([("__name__", "y"), ("job", "a"), ("instance", "2")]);
        assert_eq!(a.signature(&["job".into()], true), b.signature(&["job".into()], true));
        assert_ne!(a.signature(&[], false), b.signature(&[], false));
        assert_eq!(a.signature(&["instance".into()], false), b.signature(&["instance".into()], false));
        assert_eq!(a.project(&["instance".into()], false).to_string(), r#"{job="a"}"#);
    }
}
