//! Field types: a (database, measurement, field) keeps the type it was first written with, as in
//! InfluxDB; a point whose field has another type is rejected with InfluxDB's `field type conflict`.
//!
//! The registry is persisted as JSON lines (`["db","measurement","field","float"]`), appended and fsynced
//! before the first point with a new field is appended to the log. A type is claimed even when that
//! write then fails (for example with 503), as InfluxDB creates the field before it writes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

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

/// A point rejected because one of its fields has another type than stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The measurement.
    pub measurement: String,
    /// The field.
    pub field: String,
    /// The type written.
    pub input: FieldType,
    /// The type already stored.
    pub existing: FieldType,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field type conflict: input field \"{}\" on measurement \"{}\" is type {}, already exists as type {}",
            self.field, self.measurement, self.input, self.existing
        )
    }
}

impl FieldTypes {
    /// Loads the registry from `path`, creating it if absent.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let mut types: HashMap<String, Measurements> = HashMap::new();
        if path.exists() {
            let f = File::open(path).map_err(IngestError::io(path))?;
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(IngestError::io(path))?;
                // A crash can leave a torn last line; the type is claimed again by the next write.
                let Ok((db, m, field, ty)) = serde_json::from_str::<(String, String, String, FieldType)>(&line) else {
                    tracing::warn!(file = %path.display(), line = n + 1, "skipped an unreadable field type entry");
                    continue;
                };
                types.entry(db).or_default().entry(m).or_default().entry(field).or_insert(ty);
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(IngestError::io(path))?;
        Ok(Self { types: RwLock::new(types), file: Mutex::new(file), path: path.to_path_buf() })
    }

    /// Checks every point, claiming types for fields seen for the first time. Returns, per point, the
    /// first conflict it has (`None` for points to keep). Within one call the first point to use a new
    /// field sets its type for the rest.
    pub fn check(&self, points: &[Point]) -> Result<Vec<Option<Conflict>>, IngestError> {
        let mut results = Vec::with_capacity(points.len());
        let mut new = Vec::new();
        {
            let types = self.types.read().expect("field types lock");
            for p in points {
                let known = types.get(p.series.database()).and_then(|m| m.get(p.series.measurement()));
                let mut conflict = None;
                for (name, value) in &p.fields {
                    let ty = value.field_type();
                    let existing = known.and_then(|f| f.get(name)).copied().or_else(|| {
                        new.iter().find(|(q, n, _): &&(&Point, &str, FieldType)| same_field(q, p, n, name)).map(|x| x.2)
                    });
                    match existing {
                        Some(e) if e != ty => {
                            conflict = Some(Conflict {
                                measurement: p.series.measurement().to_string(),
                                field: name.clone(),
                                input: ty,
                                existing: e,
                            });
                            break;
                        }
                        Some(_) => {}
                        None => new.push((p, name.as_str(), ty)),
                    }
                }
                results.push(conflict);
            }
        }
        if !new.is_empty() {
            self.claim(&new)?;
        }
        Ok(results)
    }

    fn claim(&self, new: &[(&Point, &str, FieldType)]) -> Result<(), IngestError> {
        let mut types = self.types.write().expect("field types lock");
        let mut lines = Vec::new();
        for (p, field, ty) in new {
            let fields = types
                .entry(p.series.database().to_string())
                .or_default()
                .entry(p.series.measurement().to_string())
                .or_default();
            // Another request may have claimed it since we looked; the first claim wins, and a point
            // of ours that disagrees is then caught by the next write of that field (rare race).
            if !fields.contains_key(*field) {
                fields.insert(field.to_string(), *ty);
                let entry = (p.series.database(), p.series.measurement(), field, ty);
                lines.extend_from_slice(serde_json::to_string(&entry).expect("serializable").as_bytes());
                lines.push(b'\n');
            }
        }
        let mut file = self.file.lock().expect("field types file lock");
        file.write_all(&lines).and_then(|()| file.sync_data()).map_err(IngestError::io(&self.path))
    }
}

fn same_field(q: &Point, p: &Point, qn: &str, pn: &str) -> bool {
    qn == pn && q.series.database() == p.series.database() && q.series.measurement() == p.series.measurement()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use yaffle_core::{FieldValue, SeriesKey};

    use super::*;

    fn p(db: &str, m: &str, f: &str, v: FieldValue) -> Point {
        Point::new(Arc::new(SeriesKey::new(db, m, vec![])), vec![(f.to_string(), v)], 0)
    }

    #[test]
    fn first_type_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fields.jsonl");
        let types = FieldTypes::open(&path).unwrap();
        let r = types
            .check(&[
                p("db", "cpu", "v", FieldValue::Float(1.0)),
                p("db", "cpu", "v", FieldValue::Integer(1)),
                p("other", "cpu", "v", FieldValue::Integer(1)),
            ])
            .unwrap();
        assert_eq!(r[0], None);
        assert_eq!(
            r[1].as_ref().unwrap().to_string(),
            "field type conflict: input field \"v\" on measurement \"cpu\" is type integer, already exists as type float"
        );
        assert_eq!(r[2], None, "another database has its own types");
        drop(types);
        let types = FieldTypes::open(&path).unwrap();
        let r = types.check(&[p("db", "cpu", "v", FieldValue::String("x".into()))]).unwrap();
        assert_eq!(r[0].as_ref().unwrap().existing, FieldType::Float);
    }
}
