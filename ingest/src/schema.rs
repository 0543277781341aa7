//! Field types: a (database, measurement, field) keeps the type it was first written with, as in
//! InfluxDB; a point whose field has another type is rejected with InfluxDB's `field type conflict`.
//!
//! The registry is persisted as JSON lines (`["db","measurement","field","float"]`), appended and fsynced
//! (on the blocking pool, outside the lock that checks read) before the first point with a new field is
//! appended to the log, and before any other request can see the new type. A type is claimed even when that
//! write then fails (for example with 503), as InfluxDB creates the field before it writes.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use yaffle_core::{FieldType, Point};

use crate::error::IngestError;

type Fields = HashMap<String, FieldType>;
type Measurements = HashMap<String, Fields>;

/// The registry of field types.
#[derive(Debug)]
pub struct FieldTypes {
    types: RwLock<HashMap<String, Measurements>>,
    file: Mutex<File>,
    path: PathBuf,
}

/// Why a point is rejected by the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// One of its fields has another type than stored.
    #[error(
        "field type conflict: input field \"{field}\" on measurement \"{measurement}\" is type {input}, already exists as type {existing}"
    )]
    Type {
        /// The measurement.
        measurement: String,
        /// The field.
        field: String,
        /// The type written.
        input: FieldType,
        /// The type already stored.
        existing: FieldType,
    },
    /// Its measurement is new, and the request already brought as many new measurements as allowed.
    #[error(
        "new measurement \"{measurement}\" refused: the request has more than limits.max_new_measurements_per_request ({limit}) new measurements"
    )]
    TooManyNewMeasurements {
        /// The measurement.
        measurement: String,
        /// The limit.
        limit: usize,
    },
}

impl Conflict {
    /// The `reason` label it is counted with.
    pub fn reason(&self) -> &'static str {
        match self {
            Conflict::Type { .. } => "field_type_conflict",
            Conflict::TooManyNewMeasurements { .. } => "new_measurements",
        }
    }
}

/// A field seen for the first time: database, measurement, field, and the type it is written with.
type NewField = (String, String, String, FieldType);

impl FieldTypes {
    /// Loads the registry from `path`, creating it if absent. A torn last entry (a crash in the middle
    /// of appending it) is cut, so the next entry starts on a line of its own.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let mut types: HashMap<String, Measurements> = HashMap::new();
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(IngestError::io(path)(e)),
        };
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for (n, line) in text[..whole].split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
            let Ok((db, m, field, ty)) = serde_json::from_slice::<NewField>(line) else {
                tracing::warn!(file = %path.display(), line = n + 1, "skipped an unreadable field type entry");
                continue;
            };
            types.entry(db).or_default().entry(m).or_default().entry(field).or_insert(ty);
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(IngestError::io(path))?;
        if whole < text.len() {
            tracing::warn!(file = %path.display(), bytes = text.len() - whole, "cut a torn last field type entry; the type is claimed again by the next write");
            file.set_len(whole as u64).and_then(|()| file.sync_data()).map_err(IngestError::io(path))?;
        }
        Ok(Self { types: RwLock::new(types), file: Mutex::new(file), path: path.to_path_buf() })
    }

    /// Checks every point, claiming types for fields seen for the first time. Returns, per point, the
    /// first conflict it has (`None` for points to keep). Within one call the first point to use a new
    /// field sets its type for the rest. A claim is durable before any request can see it; its fsync
    /// runs on the blocking pool, and known fields cost one read lock and no I/O.
    ///
    /// Points of new measurements past the first `max_new_measurements` of the request are refused
    /// (a request naming a million new measurements would otherwise grow the registry, its file and
    /// every tier's state by as much).
    pub async fn check(
        self: &Arc<Self>,
        points: &[Point],
        max_new_measurements: usize,
    ) -> Result<Vec<Option<Conflict>>, IngestError> {
        let (conflicts, new) = self.check_known(points, max_new_measurements);
        if new.is_empty() {
            return Ok(conflicts);
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.claim(new)).await.expect("field type claim panicked")?;
        // Every field is known now, by our claim or by a request that claimed it first; the points
        // refused for their new measurement stay refused.
        let (checked, _) = self.check_known(points, usize::MAX);
        Ok(conflicts
            .into_iter()
            .zip(checked)
            .map(|(first, now)| match first {
                Some(refused @ Conflict::TooManyNewMeasurements { .. }) => Some(refused),
                _ => now,
            })
            .collect())
    }

    /// Conflicts against the known types (and the request's own first uses), and the new fields.
    fn check_known(&self, points: &[Point], max_new_measurements: usize) -> (Vec<Option<Conflict>>, Vec<NewField>) {
        let types = self.types.read().expect("field types lock");
        let mut conflicts = Vec::with_capacity(points.len());
        let mut new: HashMap<(&str, &str, &str), FieldType> = HashMap::new();
        let mut new_measurements: HashSet<(&str, &str)> = HashSet::new();
        for p in points {
            let (db, m) = (p.series.database(), p.series.measurement());
            let known = types.get(db).and_then(|ms| ms.get(m));
            if known.is_none() && !new_measurements.contains(&(db, m)) {
                if new_measurements.len() == max_new_measurements {
                    let limit = max_new_measurements;
                    conflicts.push(Some(Conflict::TooManyNewMeasurements { measurement: m.to_string(), limit }));
                    continue;
                }
                new_measurements.insert((db, m));
            }
            let mut conflict = None;
            for (name, value) in &p.fields {
                let ty = value.field_type();
                let key = (db, m, name.as_str());
                match known.and_then(|f| f.get(name)).or_else(|| new.get(&key)) {
                    Some(&existing) if existing != ty => {
                        let (measurement, field) = (m.to_string(), name.clone());
                        conflict = Some(Conflict::Type { measurement, field, input: ty, existing });
                        break;
                    }
                    Some(_) => {}
                    None => {
                        new.insert(key, ty);
                    }
                }
            }
            conflicts.push(conflict);
        }
        let new = new.into_iter().map(|((d, m, f), ty)| (d.to_string(), m.to_string(), f.to_string(), ty)).collect();
        (conflicts, new)
    }

    /// Persists the fields no other request claimed meanwhile, then makes them visible. Claimers queue
    /// on the file; checks of known fields go on meanwhile.
    fn claim(&self, new: Vec<NewField>) -> Result<(), IngestError> {
        let mut file = self.file.lock().expect("field types file lock");
        let unclaimed: Vec<NewField> = {
            let types = self.types.read().expect("field types lock");
            let known =
                |(d, m, f, _): &NewField| types.get(d).and_then(|ms| ms.get(m)).is_some_and(|fs| fs.contains_key(f));
            new.into_iter().filter(|n| !known(n)).collect()
        };
        if unclaimed.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for entry in &unclaimed {
            serde_json::to_writer(&mut lines, entry).expect("serializable");
            lines.push(b'\n');
        }
        file.write_all(&lines).and_then(|()| file.sync_data()).map_err(IngestError::io(&self.path))?;
        let mut types = self.types.write().expect("field types lock");
        for (d, m, f, ty) in unclaimed {
            types.entry(d).or_default().entry(m).or_default().entry(f).or_insert(ty);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use yaffle_core::{FieldValue, SeriesKey};

    use super::*;

    const ANY: usize = usize::MAX;

    fn existing(c: &Option<Conflict>) -> FieldType {
        match c {
            Some(Conflict::Type { existing, .. }) => *existing,
            other => panic!("not a type conflict: {other:?}"),
        }
    }

    fn p(db: &str, m: &str, f: &str, v: FieldValue) -> Point {
        Point::new(Arc::new(SeriesKey::new(db, m, vec![])), vec![(f.to_string(), v)], 0)
    }

    #[tokio::test]
    async fn first_type_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fields.jsonl");
        let types = Arc::new(FieldTypes::open(&path).unwrap());
        let r = types
            .check(
                &[
                    p("db", "cpu", "v", FieldValue::Float(1.0)),
                    p("db", "cpu", "v", FieldValue::Integer(1)),
                    p("other", "cpu", "v", FieldValue::Integer(1)),
                ],
                ANY,
            )
            .await
            .unwrap();
        assert_eq!(r[0], None);
        assert_eq!(
            r[1].as_ref().unwrap().to_string(),
            "field type conflict: input field \"v\" on measurement \"cpu\" is type integer, already exists as type float"
        );
        assert_eq!(r[2], None, "another database has its own types");
        drop(types);
        let types = Arc::new(FieldTypes::open(&path).unwrap());
        let r = types.check(&[p("db", "cpu", "v", FieldValue::String("x".into()))], ANY).await.unwrap();
        assert_eq!(existing(&r[0]), FieldType::Float);
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_cut_and_the_next_entry_gets_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fields.jsonl");
        std::fs::write(&path, "[\"db\",\"cpu\",\"a\",\"float\"]\n[\"db\",\"cpu\",\"b\",\"int").unwrap();
        let types = Arc::new(FieldTypes::open(&path).unwrap());
        types.check(&[p("db", "cpu", "b", FieldValue::Integer(1))], ANY).await.unwrap();
        drop(types);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[\"db\",\"cpu\",\"a\",\"float\"]\n[\"db\",\"cpu\",\"b\",\"integer\"]\n");
        let types = Arc::new(FieldTypes::open(&path).unwrap());
        let points = [p("db", "cpu", "a", FieldValue::Integer(1)), p("db", "cpu", "b", FieldValue::Float(1.0))];
        let r = types.check(&points, ANY).await.unwrap();
        assert_eq!(existing(&r[0]), FieldType::Float);
        assert_eq!(existing(&r[1]), FieldType::Integer);
    }

    #[tokio::test]
    async fn many_new_measurements_in_one_request_are_claimed_in_linear_time() {
        // Quadratic matching took seconds at this size; linear takes milliseconds. Only the outcome is
        // asserted here (timings live in benchmarks): every measurement is claimed once and reopened.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fields.jsonl");
        let types = Arc::new(FieldTypes::open(&path).unwrap());
        let points: Vec<_> = (0..20_000).map(|i| p("db", &format!("m{i}"), "v", FieldValue::Float(1.0))).collect();
        assert!(types.check(&points, ANY).await.unwrap().iter().all(Option::is_none));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 20_000);
    }

    #[tokio::test]
    async fn new_measurements_past_the_request_limit_are_refused_and_known_ones_pass() {
        let dir = tempfile::tempdir().unwrap();
        let types = Arc::new(FieldTypes::open(&dir.path().join("fields.jsonl")).unwrap());
        types.check(&[p("db", "known", "v", FieldValue::Float(1.0))], ANY).await.unwrap();
        let points: Vec<_> =
            ["a", "b", "a", "known", "c", "b"].iter().map(|m| p("db", m, "v", FieldValue::Float(1.0))).collect();
        let r = types.check(&points, 2).await.unwrap();
        let refused: Vec<usize> = (0..r.len()).filter(|&i| r[i].is_some()).collect();
        assert_eq!(refused, [4], "{r:?}");
        assert_eq!(
            r[4].as_ref().unwrap().to_string(),
            "new measurement \"c\" refused: the request has more than limits.max_new_measurements_per_request (2) new measurements"
        );
    }
}
