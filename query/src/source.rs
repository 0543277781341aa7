//! The store as the PromQL engine's [`Source`]: a selection becomes a [`SeriesSelect`] (the metric
//! name resolved to its (measurement, field) pairs, equality matchers on tags pushed down), and the
//! answer is filtered by every matcher.

use std::sync::{Arc, Mutex};

use yaffle_core::point::metric_name;
use yaffle_promql::{Error, Labels, METRIC_NAME, Selection, Series, Source};
use yaffle_store::{SelectedSeries, SeriesSelect, Store, StoreError, name_candidates};

/// One request's view of the store: a database, a sample budget, and the warnings gathered.
#[derive(Debug)]
pub(crate) struct StoreSource {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) database: String,
    pub(crate) max_samples: usize,
    pub(crate) warnings: Mutex<Vec<String>>,
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
    pub(crate) async fn read(&self, selection: &Selection, with_samples: bool) -> Result<Vec<Series>, Error> {
        let select = SeriesSelect {
            database: self.database.clone(),
            names: selection.metric_name().map(name_candidates),
            tags: selection.equalities().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            start_ns: selection.start_ns,
            end_ns: selection.end_ns,
            with_samples,
            max_samples: self.max_samples,
        };
        let selected = self.store.select_series(&select).await.map_err(store_error)?;
        if !selected.warnings.is_empty() {
            self.warnings.lock().unwrap_or_else(|e| e.into_inner()).extend(selected.warnings);
        }
        Ok(selected
            .series
            .into_iter()
            .filter_map(|s| {
                let labels = labels_of(&s);
                selection.matches(&labels).then_some(Series { labels, samples: s.samples })
            })
            .collect())
    }
}

impl Source for StoreSource {
    async fn select(&self, selection: &Selection) -> Result<Vec<Series>, Error> {
        self.read(selection, true).await
    }
}
