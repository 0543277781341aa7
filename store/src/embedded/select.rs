//! `select_series` on the embedded store: one DataFusion scan with the database, the names and the
//! time span as filters (pruned by Parquet statistics), grouped by (series id, field) as it streams.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, MapArray, StringArray};
use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::prelude::{Expr, col, lit};
use futures_util::StreamExt;

use super::EmbeddedStore;
use crate::schema::POINTS_TABLE;
use crate::select::finish;
use crate::{SelectedSeries, SeriesSelect, StoreError};

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

impl EmbeddedStore {
    pub(super) async fn select(&self, select: &SeriesSelect) -> Result<Vec<SelectedSeries>, StoreError> {
        let ctx = self.session().await?;
        let mut filter = col("database")
            .eq(lit(select.database.clone()))
            .and(col("time").gt_eq(time_lit(select.start_ns)))
            .and(col("time").lt_eq(time_lit(select.end_ns)))
            .and(col("value").is_not_null());
        if let Some(names) = &select.names {
            let any = names
                .iter()
                .map(|(m, f)| col("measurement").eq(lit(m.clone())).and(col("field").eq(lit(f.clone()))))
                .reduce(Expr::or)
                .unwrap_or(lit(false));
            filter = filter.and(any);
        }
        let df = ctx
            .table(POINTS_TABLE)
            .await
            .map_err(execution)?
            .filter(filter)
            .map_err(execution)?
            .select_columns(&["series_id", "field", "time", "value", "measurement", "tags"])
            .map_err(execution)?;
        let (max_samples, with_samples) = (select.max_samples, select.with_samples);
        let wanted_tags = select.tags.clone();
        let run = async move {
            let mut stream = df.execute_stream().await.map_err(execution)?;
            let mut index: HashMap<(u64, String), usize> = HashMap::new();
            let mut out: Vec<SelectedSeries> = Vec::new();
            // Series whose tags miss a wanted value: skipped without building them again.
            let mut skipped: std::collections::HashSet<(u64, String)> = Default::default();
            let mut samples = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(execution)?;
                let ids = batch.column(0).as_primitive::<UInt64Type>();
                let fields = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| execution("field is not a string"))?;
                let times = batch.column(2).as_primitive::<TimestampNanosecondType>();
                let values = batch.column(3).as_primitive::<Float64Type>();
                let measurements = batch.column(4).as_string::<i32>();
                let tags = batch.column(5).as_map();
                for row in 0..batch.num_rows() {
                    let key = (ids.value(row), fields.value(row).to_string());
                    if skipped.contains(&key) {
                        continue;
                    }
                    let i = match index.get(&key) {
                        Some(&i) => i,
                        None => {
                            let t = tags_of(tags, row);
                            if !wanted_tags.iter().all(|w| t.contains(w)) {
                                skipped.insert(key);
                                continue;
                            }
                            out.push(SelectedSeries {
                                measurement: measurements.value(row).to_string(),
                                field: key.1.clone(),
                                tags: t,
                                samples: Vec::new(),
                            });
                            index.insert(key, out.len() - 1);
                            out.len() - 1
                        }
                    };
                    if with_samples {
                        samples += 1;
                        if samples > max_samples {
                            return Err(StoreError::QueryLimit(format!(
                                "the selection reads more than {max_samples} samples"
                            )));
                        }
                        out[i].samples.push((times.value(row), values.value(row)));
                    }
                }
            }
            finish(&mut out);
            Ok(out)
        };
        self.queries.run(self.limits.timeout, "store.embedded.query.timeout", run).await
    }
}
