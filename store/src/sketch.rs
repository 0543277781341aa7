//! The rollups' `sketch` column: a DDSketch in DataDog's binary encoding (that of sketches-java's
//! `DDSketchWithExactSummaryStatistics`, which `sketches-ddsketch` writes and reads), in standard
//! base64, empty when sketches are off. Only the bins holding values are written: a minute of a 10 s
//! scrape takes about 80 characters.
//!
//! SQL on the embedded store reads it with the aggregate `sketch_quantile(sketch, q)`: the `q`
//! quantile (a constant, 0 to 1) of the values of every row it aggregates, their sketches merged,
//! within the sketches' relative accuracy; NULL when no row has a sketch. Grouped by the row's key it
//! is one window's quantile; grouped by time over a coarser range, the quantile of all of it (which
//! no mean of per-window quantiles gives).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{Accumulator, AggregateUDF, Volatility, create_udaf};
use sketches_ddsketch::{Config, DDSketch};

/// The SQL name of the quantile aggregate.
pub const QUANTILE: &str = "sketch_quantile";

/// An empty sketch of this relative accuracy (0.01: quantiles within 1 %) and bin limit (past it the
/// lowest bins collapse); values nearer zero than 1e-9, far below any metric's resolution, count as zero.
pub fn new_sketch(relative_accuracy: f64, max_bins: u32) -> DDSketch {
    DDSketch::new(Config::new(relative_accuracy, max_bins, 1e-9))
}

/// A sketch as the column stores it.
pub fn encode(sketch: &DDSketch) -> String {
    BASE64_STANDARD.encode(sketch.to_java_bytes())
}

/// A sketch from the column. Its relative accuracy is the writer's; its bin limit the default (2 048).
pub fn decode(stored: &str) -> Result<DDSketch, String> {
    let bytes = BASE64_STANDARD.decode(stored).map_err(|e| format!("sketch is not base64: {e}"))?;
    DDSketch::from_java_bytes(&bytes).map_err(|e| format!("sketch is not a DDSketch encoding: {e}"))
}

/// `sketch_quantile(sketch, q)` for DataFusion.
pub fn quantile_udaf() -> AggregateUDF {
    create_udaf(
        QUANTILE,
        vec![DataType::Utf8, DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::<Quantile>::default())),
        // Partial aggregates travel as the merged sketch, encoded, and q.
        Arc::new(vec![DataType::Utf8, DataType::Float64]),
    )
}

/// The sketches seen so far, merged, and the quantile asked for.
#[derive(Default)]
struct Quantile {
    sketch: Option<DDSketch>,
    q: Option<f64>,
}

impl std::fmt::Debug for Quantile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = self.sketch.as_ref().map_or(0, DDSketch::count);
        f.debug_struct("Quantile").field("values", &values).field("q", &self.q).finish()
    }
}

fn error(message: String) -> DataFusionError {
    DataFusionError::Execution(format!("{QUANTILE}: {message}"))
}

impl Quantile {
    /// Merges the non-empty sketches of `sketches` and takes q from `qs`.
    fn add(&mut self, sketches: &ArrayRef, qs: &ArrayRef) -> datafusion::common::Result<()> {
        let sketches = cast(sketches, &DataType::Utf8)?;
        let qs = cast(qs, &DataType::Float64)?;
        let (sketches, qs) = (sketches.as_string::<i32>(), qs.as_primitive::<arrow::datatypes::Float64Type>());
        for row in 0..sketches.len() {
            if self.q.is_none() && qs.is_valid(row) {
                self.q = Some(qs.value(row));
            }
            if sketches.is_null(row) || sketches.value(row).is_empty() {
                continue;
            }
            // Name the value (its start): a row number within an aggregate's batch would mean nothing.
            let stored = sketches.value(row);
            let named = |e: String| error(format!("{e}: {:?}", stored.chars().take(40).collect::<String>()));
            let other = decode(stored).map_err(named)?;
            match &mut self.sketch {
                None => self.sketch = Some(other),
                Some(sketch) => sketch.merge(&other).map_err(|e| named(e.to_string()))?,
            }
        }
        Ok(())
    }
}

impl Accumulator for Quantile {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.add(&values[0], &values[1])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.add(&states[0], &states[1])
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        let sketch = self.sketch.as_ref().map_or_else(String::new, encode);
        Ok(vec![ScalarValue::Utf8(Some(sketch)), ScalarValue::Float64(self.q)])
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        let (Some(sketch), Some(q)) = (&self.sketch, self.q) else { return Ok(ScalarValue::Float64(None)) };
        if !(0.0..=1.0).contains(&q) {
            return Err(error(format!("the quantile must be between 0 and 1, not {q}")));
        }
        let value = sketch.quantile(q).map_err(|e| error(e.to_string()))?;
        Ok(ScalarValue::Float64(value))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.sketch.as_ref().map_or(0, |s| s.length() * size_of::<u64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_sketch_is_the_datadog_binary_form_in_base64_and_decodes_to_the_same_sketch() {
        let mut sketch = new_sketch(0.01, 2048);
        [12.5, 13.0, 0.0, -4.0, 250.0, 13.1].iter().for_each(|&v| sketch.add(v));
        let stored = encode(&sketch);
        // Only the bins holding values are written: a minute of a 10 s scrape takes about a hundred
        // characters (the crate's serde form writes the dense store, 128 bins or more, zeros included).
        assert!(stored.len() < 120, "{} characters: {stored}", stored.len());
        let back = decode(&stored).unwrap();
        assert_eq!(back.count(), 6);
        assert_eq!((back.min(), back.max(), back.sum()), (sketch.min(), sketch.max(), sketch.sum()));
        for p in [0.0, 0.2, 0.5, 0.8, 1.0] {
            assert_eq!(back.quantile(p).unwrap(), sketch.quantile(p).unwrap(), "q{p}");
        }
        let err = decode("not base64!").err().unwrap();
        assert!(err.contains("base64"), "{err}");
    }
}
