//! `select_series` on the embedded store: one DataFusion scan of `points` (or of `rollups` at one
//! resolution) with the database, the names and the time span as filters, grouped by (series id,
//! field) as it streams.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray, MapArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::prelude::{Expr, col, lit};
use futures_util::StreamExt;

use super::EmbeddedStore;
use crate::rollups::ROLLUPS_TABLE;
use crate::schema::POINTS_TABLE;
use crate::select::finish;
use crate::{Aggregate, SelectedSeries, SeriesSelect, StoreError, Window};

fn time_lit(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())))
}

fn execution(e: impl std::fmt::Display) -> StoreError {
    StoreError::Execution(e.to_string())
}

fn tags_of(tags: &MapArray, row: usize) -> Vec<(String, String)> {
    let entry = tags.value(row);
    let keys = entry.column(0).as_string::<i32>();
    let values = entry.column(1).as_string::<i32>();
    let mut out: Vec<(String, String)> =
        (0..entry.len()).map(|i| (keys.value(i).to_string(), values.value(i).to_string())).collect();
    out.sort();
    out
}

/// Columns read first from either table, in this order.
const KEY_COLUMNS: [&str; 5] = ["series_id", "field", "time", "measurement", "tags"];
const ROLLUP_COLUMNS: [&str; 8] = ["count", "sum", "min", "max", "first", "last", "first_ns", "last_ns"];

/// Rows grouped into series, with the tag filter and the sample budget.
struct Grouper {
    wanted_tags: Vec<(String, String)>,
    index: HashMap<(u64, String), usize>,
    skipped: HashSet<(u64, String)>,
    out: Vec<SelectedSeries>,
    samples: usize,
    max_samples: usize,
}

impl Grouper {
    /// The series of `row`, `None` when its tags are not wanted.
    fn series(&mut self, batch: &RecordBatch, row: usize) -> Result<Option<usize>, StoreError> {
        let id = batch.column(0).as_primitive::<UInt64Type>().value(row);
        let field = batch.column(1).as_string::<i32>().value(row);
        let key = (id, field.to_string());
        if let Some(&i) = self.index.get(&key) {
            return Ok(Some(i));
        }
        if self.skipped.contains(&key) {
            return Ok(None);
        }
        let tags = tags_of(batch.column(4).as_map(), row);
        if !self.wanted_tags.iter().all(|w| tags.contains(w)) {
            self.skipped.insert(key);
            return Ok(None);
        }
        let measurement = batch.column(3).as_string::<i32>().value(row).to_string();
        self.out.push(SelectedSeries { measurement, field: key.1.clone(), tags, ..Default::default() });
        self.index.insert(key, self.out.len() - 1);
        Ok(Some(self.out.len() - 1))
    }

    fn count(&mut self) -> Result<(), StoreError> {
        self.samples += 1;
        if self.samples > self.max_samples {
            return Err(StoreError::QueryLimit(format!("the selection reads more than {} samples", self.max_samples)));
        }
        Ok(())
    }
}

impl EmbeddedStore {
    pub(super) async fn select(&self, select: &SeriesSelect) -> Result<Vec<SelectedSeries>, StoreError> {
        let ctx = self.session().await?;
        let (table, start, value_columns) = match select.resolution_s {
            None => (POINTS_TABLE, select.start_ns, vec!["value"]),
            // A window holds samples up to a resolution after its start.
            Some(r) => {
                (ROLLUPS_TABLE, select.start_ns.saturating_sub(i64::from(r) * 1_000_000_000), ROLLUP_COLUMNS.to_vec())
            }
        };
        if select.resolution_s.is_some() && !ctx.table_exist(ROLLUPS_TABLE).map_err(execution)? {
            return Ok(Vec::new());
        }
        let mut filter = col("database")
            .eq(lit(select.database.clone()))
            .and(col("time").gt_eq(time_lit(start)))
            .and(col("time").lt_eq(time_lit(select.end_ns)));
        filter = match select.resolution_s {
            None => filter.and(col("value").is_not_null()),
            Some(r) => filter.and(col("resolution_s").eq(lit(r))),
        };
        if let Some(names) = &select.names {
            let any = names
                .iter()
                .map(|(m, f)| col("measurement").eq(lit(m.clone())).and(col("field").eq(lit(f.clone()))))
                .reduce(Expr::or)
                .unwrap_or(lit(false));
            filter = filter.and(any);
        }
        let columns: Vec<&str> = KEY_COLUMNS.iter().copied().chain(value_columns).collect();
        let df = ctx
            .table(table)
            .await
            .map_err(execution)?
            .filter(filter)
            .map_err(execution)?
            .select_columns(&columns)
            .map_err(execution)?;
        let mut g = Grouper {
            wanted_tags: select.tags.clone(),
            index: HashMap::new(),
            skipped: HashSet::new(),
            out: Vec::new(),
            samples: 0,
            max_samples: select.max_samples,
        };
        let (with_samples, rollups) = (select.with_samples, select.resolution_s.is_some());
        let run = async move {
            let mut stream = df.execute_stream().await.map_err(execution)?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(execution)?;
                let times = batch.column(2).as_primitive::<TimestampNanosecondType>();
                let f64s = |i: usize| batch.column(5 + i).as_primitive::<Float64Type>();
                for row in 0..batch.num_rows() {
                    let Some(i) = g.series(&batch, row)? else { continue };
                    if !with_samples {
                        continue;
                    }
                    g.count()?;
                    if rollups {
                        let ns = |i: usize| batch.column(5 + i).as_primitive::<Int64Type>().value(row);
                        let aggregate = Aggregate {
                            count: batch.column(5).as_primitive::<UInt64Type>().value(row),
                            sum: f64s(1).value(row),
                            min: f64s(2).value(row),
                            max: f64s(3).value(row),
                            first: (ns(6), f64s(4).value(row)),
                            last: (ns(7), f64s(5).value(row)),
                        };
                        g.out[i].windows.push(Window { start_ns: times.value(row), aggregate });
                    } else {
                        g.out[i].samples.push((times.value(row), f64s(0).value(row)));
                    }
                }
            }
            finish(&mut g.out);
            Ok(g.out)
        };
        self.queries.run(self.limits.timeout, "store.embedded.query.timeout", run).await
    }
}
