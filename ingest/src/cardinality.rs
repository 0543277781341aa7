//! The active-series limit: how many different series ingest accepts within an hour, in all and per
//! database (VictoriaMetrics' `-storage.maxHourlySeries` as the model). A point of a series seen in
//! the current or the previous hour always passes; a point of a new series past a limit is refused
//! (and counted), so the state every tier keeps per series (the store's, downsampling's open
//! windows, the evaluator's) is bounded by it.
//!
//! The state is two generations of series ids, rotated every hour: about 16 bytes per active series.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use yaffle_core::Point;

/// How long a series stays active without a point.
const GENERATION: Duration = Duration::from_secs(3600);

/// Admits points by the active-series limits.
#[derive(Debug)]
pub struct SeriesLimiter {
    max_total: usize,
    max_per_database: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Series seen in this generation, with their database's number.
    current: HashMap<u64, u32>,
    /// Series of the previous generation not seen in this one yet.
    previous: HashMap<u64, u32>,
    /// Active series per database number (in either generation).
    per_database: Vec<usize>,
    databases: HashMap<String, u32>,
    rotated: Instant,
}

/// Why a point was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesLimitError {
    /// The limit over all databases.
    #[error("new series {series} refused: limits.max_active_series ({limit}) series are active")]
    Total {
        /// The refused series.
        series: String,
        /// The limit.
        limit: usize,
    },
    /// The limit of the point's database.
    #[error(
        "new series {series} refused: limits.max_active_series_per_database ({limit}) series are active in its database"
    )]
    Database {
        /// The refused series.
        series: String,
        /// The limit.
        limit: usize,
    },
}

impl SeriesLimiter {
    /// A limiter of `max_total` active series, `max_per_database` in any one database.
    pub fn new(max_total: usize, max_per_database: usize) -> Self {
        let state = State {
            current: HashMap::new(),
            previous: HashMap::new(),
            per_database: Vec::new(),
            databases: HashMap::new(),
            rotated: Instant::now(),
        };
        Self { max_total, max_per_database, state: Mutex::new(state) }
    }

    /// The limiter `limits.max_active_series` and `limits.max_active_series_per_database` describe.
    pub fn from_limits(limits: &crate::config::LimitsConfig) -> Self {
        Self::new(limits.max_active_series, limits.max_active_series_per_database)
    }

    /// Keeps the points whose series are active or may become so; each refused one is an error.
    pub fn admit(&self, points: Vec<Point>, errors: &mut Vec<SeriesLimitError>) -> Vec<Point> {
        let mut state = self.state.lock().expect("series limiter lock");
        state.rotate_if_due(Instant::now());
        let mut kept = Vec::with_capacity(points.len());
        for p in points {
            let id = p.series_id.0;
            if state.current.contains_key(&id) {
                kept.push(p);
                continue;
            }
            if let Some(db) = state.previous.remove(&id) {
                state.current.insert(id, db);
                kept.push(p);
                continue;
            }
            let db = state.database(p.series.database());
            if state.current.len() + state.previous.len() >= self.max_total {
                errors.push(SeriesLimitError::Total { series: p.series.to_string(), limit: self.max_total });
            } else if state.per_database[db as usize] >= self.max_per_database {
                errors.push(SeriesLimitError::Database { series: p.series.to_string(), limit: self.max_per_database });
            } else {
                state.current.insert(id, db);
                state.per_database[db as usize] += 1;
                kept.push(p);
            }
        }
        kept
    }

    /// Series active now (seen in this or the previous hour).
    pub fn active(&self) -> usize {
        let state = self.state.lock().expect("series limiter lock");
        state.current.len() + state.previous.len()
    }

    #[cfg(test)]
    fn rotate_now(&self) {
        let mut state = self.state.lock().expect("series limiter lock");
        state.rotated -= GENERATION;
        state.rotate_if_due(Instant::now());
    }
}

impl State {
    fn database(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.databases.get(name) {
            return n;
        }
        let n = self.per_database.len() as u32;
        self.per_database.push(0);
        self.databases.insert(name.to_string(), n);
        n
    }

    /// Starts a new generation: series not seen for a whole one are no longer active.
    fn rotate_if_due(&mut self, now: Instant) {
        if now.duration_since(self.rotated) < GENERATION {
            return;
        }
        for db in self.previous.values() {
            self.per_database[*db as usize] -= 1;
        }
        self.previous = std::mem::take(&mut self.current);
        self.rotated = now;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use yaffle_core::{FieldValue, SeriesKey};

    use super::*;

    fn points(db: &str, hosts: std::ops::Range<u32>) -> Vec<Point> {
        hosts
            .map(|h| {
                let key = Arc::new(SeriesKey::new(db, "m", vec![("host".into(), h.to_string())]));
                Point::new(key, vec![("v".into(), FieldValue::Float(1.0))], 1)
            })
            .collect()
    }

    #[test]
    fn new_series_past_a_limit_are_refused_and_active_ones_always_pass() {
        let limiter = SeriesLimiter::new(5, 3);
        let mut errors = Vec::new();
        assert_eq!(limiter.admit(points("a", 0..4), &mut errors).len(), 3);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "new series a/m,host=3 refused: limits.max_active_series_per_database (3) series are active in its database"
        );
        errors.clear();
        assert_eq!(limiter.admit(points("b", 0..4), &mut errors).len(), 2, "the total limit");
        assert!(errors[0].to_string().contains("limits.max_active_series (5)"), "{errors:?}");
        errors.clear();
        // Known series pass whatever the limits.
        assert_eq!(limiter.admit(points("a", 0..3), &mut errors).len(), 3);
        assert!(errors.is_empty());
        assert_eq!(limiter.active(), 5);

        // A series seen in the last generation stays active; one silent for two is forgotten.
        limiter.rotate_now();
        assert_eq!(limiter.admit(points("a", 0..1), &mut errors).len(), 1);
        assert_eq!(limiter.active(), 5);
        limiter.rotate_now();
        assert_eq!(limiter.active(), 1);
        assert_eq!(limiter.admit(points("b", 10..14), &mut errors).len(), 3, "room again, per database 3");
        assert_eq!(limiter.active(), 4);
    }
}
