//! `select_series` on ClickHouse: the selection as SQL over the Distributed `points` table, so each
//! shard filters by database, names and time (its sort key) and only matching rows travel.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};

use super::ClickHouseStore;
use crate::select::finish;
use crate::{Aggregate, Selected, SelectedSeries, SeriesSelect, Store, StoreError, Window};

/// A ClickHouse string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The aggregates of a rollup row, the latest version of each window (merges may not have run).
const WINDOW_COLUMNS: &str = "argMax(count, version), argMax(sum, version), argMax(min, version), \
     argMax(max, version), argMax(first, version), argMax(last, version), argMax(first_ns, version), \
     argMax(last_ns, version)";

/// The SQL of a selection.
pub(super) fn select_sql(select: &SeriesSelect) -> String {
    let mut sql = match select.resolution_s {
        None => format!(
            "SELECT series_id, field, time_ns, measurement, tag_keys, tag_values, value FROM points \
             WHERE database = {} AND time_ns >= {} AND time_ns <= {} AND isNotNull(value)",
            quote(&select.database),
            select.start_ns,
            select.end_ns
        ),
        Some(r) => format!(
            "SELECT series_id, field, window_start_ns, measurement, tag_keys, tag_values, {WINDOW_COLUMNS} FROM rollups \
             WHERE database = {} AND resolution_s = {r} AND window_start_ns >= {} AND window_start_ns <= {}",
            quote(&select.database),
            select.start_ns.saturating_sub(i64::from(r) * 1_000_000_000),
            select.end_ns
        ),
    };
    if let Some(names) = &select.names {
        let any: Vec<String> =
            names.iter().map(|(m, f)| format!("(measurement = {} AND field = {})", quote(m), quote(f))).collect();
        sql.push_str(&format!(" AND ({})", if any.is_empty() { "0".to_string() } else { any.join(" OR ") }));
    }
    for (k, v) in &select.tags {
        sql.push_str(&format!(" AND tag_values[indexOf(tag_keys, {})] = {}", quote(k), quote(v)));
    }
    if select.resolution_s.is_some() {
        sql.push_str(" GROUP BY series_id, field, window_start_ns, measurement, tag_keys, tag_values");
    }
    sql
}

fn strings(json: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Execution(format!("unreadable tag array {json:?}: {e}")))
}

impl ClickHouseStore {
    pub(super) async fn select(&self, select: &SeriesSelect) -> Result<Selected, StoreError> {
        let result = self.query(&select_sql(select)).await?;
        let mut index: HashMap<(u64, String), usize> = HashMap::new();
        let mut series: Vec<SelectedSeries> = Vec::new();
        let mut samples = 0usize;
        for batch in &result.batches {
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let fields = batch.column(1).as_string::<i32>();
            let times = batch.column(2).as_primitive::<Int64Type>();
            let measurements = batch.column(3).as_string::<i32>();
            let (keys, vals) = (batch.column(4).as_string::<i32>(), batch.column(5).as_string::<i32>());
            // NaN and infinities arrive as null from JSON.
            let f64_at = |c: usize, row: usize| {
                let a = batch.column(c).as_primitive::<Float64Type>();
                if a.is_null(row) { f64::NAN } else { a.value(row) }
            };
            let i64_at = |c: usize, row: usize| batch.column(c).as_primitive::<Int64Type>().value(row);
            for row in 0..batch.num_rows() {
                let key = (ids.value(row), fields.value(row).to_string());
                let i = match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let mut tags: Vec<(String, String)> =
                            strings(keys.value(row))?.into_iter().zip(strings(vals.value(row))?).collect();
                        tags.sort();
                        series.push(SelectedSeries {
                            measurement: measurements.value(row).to_string(),
                            field: key.1.clone(),
                            tags,
                            ..Default::default()
                        });
                        index.insert(key, series.len() - 1);
                        series.len() - 1
                    }
                };
                if select.with_samples {
                    samples += 1;
                    if samples > select.max_samples {
                        return Err(StoreError::QueryLimit(format!(
                            "the selection reads more than {} samples",
                            select.max_samples
                        )));
                    }
                    if select.resolution_s.is_some() {
                        let aggregate = Aggregate {
                            count: batch.column(6).as_primitive::<UInt64Type>().value(row),
                            sum: f64_at(7, row),
                            min: f64_at(8, row),
                            max: f64_at(9, row),
                            first: (i64_at(12, row), f64_at(10, row)),
                            last: (i64_at(13, row), f64_at(11, row)),
                        };
                        series[i].windows.push(Window { start_ns: times.value(row), aggregate });
                    } else {
                        series[i].samples.push((times.value(row), f64_at(6, row)));
                    }
                }
            }
        }
        finish(&mut series);
        Ok(Selected { series, warnings: result.warnings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_sql_quotes_and_pushes_down() {
        let sql = select_sql(&SeriesSelect {
            database: "d'b".into(),
            names: Some(vec![("cpu".into(), "usage\\x".into())]),
            tags: vec![("host".into(), "a".into())],
            start_ns: 1,
            end_ns: 2,
            with_samples: true,
            max_samples: 10,
            resolution_s: None,
        });
        assert!(sql.contains(r"database = 'd\'b'"), "{sql}");
        assert!(sql.contains(r"(measurement = 'cpu' AND field = 'usage\\x')"), "{sql}");
        assert!(sql.contains("tag_values[indexOf(tag_keys, 'host')] = 'a'"), "{sql}");
        assert!(sql.contains("time_ns >= 1 AND time_ns <= 2"), "{sql}");
    }
}
