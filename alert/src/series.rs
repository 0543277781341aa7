//! The evaluator's in-memory series: only series some rule selects, only samples some rule can still
//! see.
//!
//! A stream series is one (series id, field) of a point: its labels are the point's tags plus
//! `__name__` = `<measurement>_<field>` ([`yaffle_core::point::metric_name`]). It is looked up by a
//! hash of the ingest-computed series id and the field name, so no label string is hashed per point.
//! Series no selector matches are remembered as ignored (up to a bound) and cost one lookup per point.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use promql_parser::label::Matcher;
use yaffle_core::Point;
use yaffle_core::point::{FieldValue, metric_name};

use crate::labels::{Labels, METRIC_NAME};

pub use yaffle_promql::{STALE_NAN_BITS, is_stale};

/// One stream series and its retained samples, oldest first.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) labels: Labels,
    pub(crate) samples: VecDeque<(i64, f64)>,
}

impl Series {
    /// Samples with `from <= ts <= to`.
    pub(crate) fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, f64)> + '_ {
        let start = self.samples.partition_point(|&(t, _)| t < from);
        self.samples.range(start..).take_while(move |&&(t, _)| t <= to).copied()
    }
}

/// A compiled selector: its matchers and the series it matches.
#[derive(Debug)]
pub(crate) struct SelectorEntry {
    matchers: Vec<Matcher>,
    pub(crate) members: Vec<u32>,
}

impl SelectorEntry {
    fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
    }
}

/// What one ingest call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestStats {
    /// Samples stored.
    pub stored: u64,
    /// Samples no rule selects.
    pub ignored: u64,
    /// Samples stored out of order (before the latest sample of their series).
    pub out_of_order: u64,
    /// Samples dropped: older than anything a rule can still see, or a new series past `max_series`.
    pub dropped: u64,
}

/// The series some selector matches, with their samples.
#[derive(Debug)]
pub(crate) struct SeriesStore {
    series: Vec<Option<Series>>,
    free: Vec<u32>,
    index: HashMap<u64, u32>,
    ignored: HashSet<u64>,
    pub(crate) selectors: Vec<SelectorEntry>,
    /// Selectors that received samples since [`SeriesStore::take_dirty`].
    dirty: Vec<bool>,
    live: usize,
    max_series: usize,
}

/// Most remembered ignored series before the memory is reset (it only saves label matching).
const MAX_IGNORED: usize = 1 << 20;

impl SeriesStore {
    pub(crate) fn new(selectors: Vec<Vec<Matcher>>, max_series: usize) -> Self {
        let dirty = vec![false; selectors.len()];
        let selectors = selectors.into_iter().map(|matchers| SelectorEntry { matchers, members: Vec::new() }).collect();
        Self {
            series: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            ignored: HashSet::new(),
            selectors,
            dirty,
            live: 0,
            max_series,
        }
    }

    /// Replaces the selectors (a rule reload), keeping the samples of series still selected.
    pub(crate) fn set_selectors(&mut self, selectors: Vec<Vec<Matcher>>) {
        self.selectors =
            selectors.into_iter().map(|matchers| SelectorEntry { matchers, members: Vec::new() }).collect();
        self.dirty = vec![true; self.selectors.len()];
        self.ignored.clear();
        let keys: Vec<(u64, u32)> = self.index.iter().map(|(&k, &v)| (k, v)).collect();
        for (key, slot) in keys {
            let labels = self.series[slot as usize].as_ref().expect("indexed series").labels.clone();
            if !self.attach(slot, &labels) {
                self.remove(key, slot);
                self.ignored.insert(key);
            }
        }
    }

    pub(crate) fn get(&self, slot: u32) -> &Series {
        self.series[slot as usize].as_ref().expect("selector member is live")
    }

    /// Number of stored series.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Stores a point's numeric fields (booleans as 0 and 1). Samples older than `floor` are dropped.
    pub(crate) fn ingest(&mut self, point: &Point, floor: i64, stats: &mut IngestStats) {
        for (field, value) in &point.fields {
            let v = match value {
                FieldValue::Boolean(b) => f64::from(u8::from(*b)),
                other => match other.as_f64() {
                    Some(v) => v,
                    None => continue,
                },
            };
            let key = xxhash_rust::xxh3::xxh3_64_with_seed(field.as_bytes(), point.series_id.0);
            let slot = match self.index.get(&key) {
                Some(&slot) => slot,
                None if self.ignored.contains(&key) => {
                    stats.ignored += 1;
                    continue;
                }
                None => match self.admit(key, point, field) {
                    Some(slot) => slot,
                    None => {
                        stats.ignored += 1;
                        continue;
                    }
                },
            };
            let t = point.timestamp;
            if t < floor {
                stats.dropped += 1;
                continue;
            }
            let samples = &mut self.series[slot as usize].as_mut().expect("indexed series").samples;
            match samples.back() {
                Some(&(last, _)) if t < last => {
                    let i = samples.partition_point(|&(s, _)| s < t);
                    if samples[i].0 == t {
                        samples[i].1 = v;
                    } else {
                        samples.insert(i, (t, v));
                    }
                    stats.out_of_order += 1;
                }
                Some(&(last, _)) if t == last => samples.back_mut().expect("non-empty").1 = v,
                _ => samples.push_back((t, v)),
            }
            stats.stored += 1;
            self.mark_dirty(slot);
        }
    }

    fn mark_dirty(&mut self, slot: u32) {
        // Few selectors per series: scanning them beats keeping a reverse index per series.
        for (i, sel) in self.selectors.iter().enumerate() {
            if !self.dirty[i] && sel.members.binary_search(&slot).is_ok() {
                self.dirty[i] = true;
            }
        }
    }

    /// The selectors that received samples since the last call.
    pub(crate) fn take_dirty(&mut self) -> Vec<bool> {
        std::mem::replace(&mut self.dirty, vec![false; self.selectors.len()])
    }

    fn admit(&mut self, key: u64, point: &Point, field: &str) -> Option<u32> {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> =
            point.series.tags().map(|(k, v)| (Arc::from(k), Arc::from(v))).collect();
        pairs.push((Arc::from(METRIC_NAME), Arc::from(metric_name(point.series.measurement(), field))));
        let labels = Labels::new(pairs);
        if !self.selectors.iter().any(|s| s.matches(&labels)) {
            if self.ignored.len() >= MAX_IGNORED {
                self.ignored.clear();
            }
            self.ignored.insert(key);
            return None;
        }
        if self.live >= self.max_series {
            return None;
        }
        let series = Series { labels: labels.clone(), samples: VecDeque::new() };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.series[slot as usize] = Some(series);
                slot
            }
            None => {
                self.series.push(Some(series));
                (self.series.len() - 1) as u32
            }
        };
        self.live += 1;
        self.index.insert(key, slot);
        self.attach(slot, &labels);
        Some(slot)
    }

    /// Adds the series to every selector it matches; false when none does.
    fn attach(&mut self, slot: u32, labels: &Labels) -> bool {
        let mut any = false;
        for sel in &mut self.selectors {
            if sel.matches(labels) {
                if let Err(i) = sel.members.binary_search(&slot) {
                    sel.members.insert(i, slot);
                }
                any = true;
            }
        }
        any
    }

    fn remove(&mut self, key: u64, slot: u32) {
        self.index.remove(&key);
        self.series[slot as usize] = None;
        self.free.push(slot);
        self.live -= 1;
        for sel in &mut self.selectors {
            if let Ok(i) = sel.members.binary_search(&slot) {
                sel.members.remove(i);
            }
        }
    }

    /// Drops samples older than `floor` and series left without samples.
    pub(crate) fn expire(&mut self, floor: i64) {
        let mut gone = Vec::new();
        for (&key, &slot) in &self.index {
            let s = self.series[slot as usize].as_mut().expect("indexed series");
            while s.samples.front().is_some_and(|&(t, _)| t < floor) {
                s.samples.pop_front();
            }
            if s.samples.is_empty() {
                gone.push((key, slot));
            }
        }
        for (key, slot) in gone {
            self.remove(key, slot);
        }
    }

    /// Retained samples in all series.
    pub(crate) fn samples(&self) -> usize {
        self.series.iter().flatten().map(|s| s.samples.len()).sum()
    }
}
