//! The store as the PromQL engine's [`Source`]: a selection becomes a [`SeriesSelect`] (the metric
//! name resolved to its (measurement, field) pairs, equality matchers on tags pushed down), and the
//! answer is filtered by every matcher.
//!
//! # Raw points or rollups
//! Each selection is read from raw points or from the rollups of one resolution:
//! - `resolution=raw` reads raw points; `resolution=<r>` (one of the rollup resolutions) reads
//!   rollups wherever the consumer allows it (see below);
//! - `resolution=auto` (the default) reads the rollups of the largest resolution `r` that divides the
//!   step, the query's start and the selection's reference times, and the range of a range
//!   function, when the consumer is one rollups answer: an instant selector (a window's last sample
//!   stands in for the latest raw sample), `count/sum/avg/min/max/last/present_over_time`. Under
//!   those conditions the answer is the raw answer (up to float rounding of sums), unless a window
//!   holds samples on both sides of an evaluation time. Instant queries read raw points.
//! - Everything else (`rate`, `quantile_over_time`, subqueries, `timestamp()`, a range vector
//!   answered as such) reads raw points; forced onto rollups, functions rollups cannot answer see
//!   the windows' first and last samples only (an approximation).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use yaffle_core::point::metric_name;
use yaffle_promql::{Consumer, Error, Labels, METRIC_NAME, Selection, Series, Source, Window};
use yaffle_store::{SelectedSeries, SeriesSelect, Store, StoreError, name_candidates};

/// Which data a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    Raw,
    /// Rollups of this many seconds, where the consumer allows.
    Fixed(u32),
    Auto,
}

/// One request's view of the store: a database, a sample budget, the resolution rule, and what
/// the answer gathered (warnings, resolutions read).
#[derive(Debug)]
pub(crate) struct StoreSource {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) database: String,
    pub(crate) max_samples: usize,
    pub(crate) warnings: Mutex<Vec<String>>,
    pub(crate) resolution: Resolution,
    /// The rollup resolutions that exist (seconds), ascending.
    pub(crate) resolutions: Arc<Vec<u32>>,
    /// A range query's start and step (ns); `None` for instant queries and metadata.
    pub(crate) steps: Option<(i64, i64)>,
    /// What served the selections: `raw` or a resolution.
    pub(crate) served: Mutex<BTreeSet<String>>,
}

pub(crate) fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::QueryLimit(m) if m.contains("timeout") || m.contains("longer than") => Error::Timeout("store read"),
        StoreError::QueryLimit(_) => {
            Error::Execution("query processing would load too many samples into memory in query execution".into())
        }
        other => Error::Execution(other.to_string()),
    }
}

/// A stored series' labels: its tags and `__name__`.
pub(crate) fn labels_of(s: &SelectedSeries) -> Labels {
    let name = metric_name(&s.measurement, &s.field);
    Labels::from_pairs(s.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain([(METRIC_NAME, name.as_str())]))
}

impl StoreSource {
    /// The series `selection` selects in its span; only labels when `with_samples` is false.
    /// The rollup resolution (seconds) `selection` is read at, `None` for raw points.
    fn resolution_for(&self, selection: &Selection) -> Option<u32> {
        if !selection.consumer.rollups_serve() {
            return None;
        }
        match self.resolution {
            Resolution::Raw => None,
            Resolution::Fixed(r) => Some(r),
            Resolution::Auto => {
                let (start, step) = self.steps?;
                let range = match selection.consumer {
                    Consumer::OverTime(_, range) => Some(range),
                    _ => None,
                };
                self.resolutions.iter().rev().copied().find(|&r| {
                    let r_ns = i64::from(r) * 1_000_000_000;
                    step % r_ns == 0
                        && start.rem_euclid(r_ns) == 0
                        && selection.end_ns.rem_euclid(r_ns) == 0
                        && range.is_none_or(|range| range >= r_ns && range % r_ns == 0)
                })
            }
        }
    }

    async fn select_store(
        &self,
        selection: &Selection,
        with_samples: bool,
        resolution_s: Option<u32>,
        start_ns: i64,
    ) -> Result<Vec<SelectedSeries>, Error> {
        let select = SeriesSelect {
            database: self.database.clone(),
            names: selection.metric_name().map(name_candidates),
            tags: selection.equalities().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            start_ns,
            end_ns: selection.end_ns,
            with_samples,
            max_samples: self.max_samples,
            resolution_s,
        };
        let selected = self.store.select_series(&select).await.map_err(store_error)?;
        if !selected.warnings.is_empty() {
            self.warnings.lock().unwrap_or_else(|e| e.into_inner()).extend(selected.warnings);
        }
        Ok(selected.series)
    }

    /// The series `selection` selects in its span; only labels when `with_samples` is false.
    ///
    /// From rollups, the span after the newest window read (what the downsampler has not closed
    /// yet) is read from raw points, each sample a window of its own; with no rollups at all the
    /// whole span is read raw.
    pub(crate) async fn read(&self, selection: &Selection, with_samples: bool) -> Result<Vec<Series>, Error> {
        let resolution_s = if with_samples { self.resolution_for(selection) } else { None };
        let mut rolled = Vec::new();
        let mut raw_from = selection.start_ns;
        if let Some(r) = resolution_s {
            rolled = self.select_store(selection, true, Some(r), selection.start_ns).await?;
            if let Some(newest) = rolled.iter().filter_map(|s| s.windows.last()).map(|w| w.start_ns).max() {
                raw_from = newest.saturating_add(i64::from(r) * 1_000_000_000);
                self.served("rollups", Some(r));
            }
        }
        let raw = if rolled.is_empty() || raw_from <= selection.end_ns {
            self.select_store(selection, with_samples, None, raw_from).await?
        } else {
            Vec::new()
        };
        let mut out: Vec<Series> = Vec::new();
        let mut index: std::collections::HashMap<Labels, usize> = Default::default();
        for s in rolled {
            let labels = labels_of(&s);
            if selection.matches(&labels) {
                index.insert(labels.clone(), out.len());
                out.push(Series { labels, samples: Vec::new(), windows: s.windows });
            }
        }
        let from_rollups = resolution_s.is_some() && !out.is_empty();
        if !from_rollups || raw.iter().any(|s| !s.samples.is_empty()) {
            self.served("raw", None);
        }
        for s in raw {
            let labels = labels_of(&s);
            if !selection.matches(&labels) {
                continue;
            }
            if !from_rollups {
                out.push(Series::raw(labels, s.samples));
                continue;
            }
            let tail = s.samples.iter().map(|&(t, v)| Window::of(t, v));
            match index.get(&labels) {
                Some(&i) => out[i].windows.extend(tail),
                None => out.push(Series { labels, samples: Vec::new(), windows: tail.collect() }),
            }
        }
        Ok(out)
    }

    fn served(&self, what: &str, resolution_s: Option<u32>) {
        let name = match resolution_s {
            None => what.to_string(),
            Some(r) => humantime::format_duration(std::time::Duration::from_secs(u64::from(r))).to_string(),
        };
        self.served.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
    }
}

impl Source for StoreSource {
    async fn select(&self, selection: &Selection) -> Result<Vec<Series>, Error> {
        self.read(selection, true).await
    }
}
