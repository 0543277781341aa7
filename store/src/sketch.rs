//! The rollups' `sketch` column: a DDSketch in DataDog's binary encoding (that of sketches-java's
//! `DDSketchWithExactSummaryStatistics`, which `sketches-ddsketch` writes and reads), in standard
//! base64, empty when sketches are off. Only the bins holding values are written: a minute of a 10 s
//! scrape takes about 80 characters. The downsampler writes a window's few values with
//! [`encode_values`], the same text without building the crate's sketch.
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

use crate::clickhouse::varint;

/// The SQL name of the quantile aggregate.
pub const QUANTILE: &str = "sketch_quantile";

/// The settings of a sketch of this relative accuracy (0.01: quantiles within 1 %) and bin limit (past
/// it the lowest bins collapse); values nearer zero than 1e-9, far below any metric's resolution, count
/// as zero.
pub fn config(relative_accuracy: f64, max_bins: u32) -> Config {
    Config::new(relative_accuracy, max_bins, 1e-9)
}

/// A sketch of `values`, added in this order.
pub fn sketch_of(values: &[f64], config: &Config) -> DDSketch {
    let mut sketch = DDSketch::new(*config);
    values.iter().for_each(|&v| sketch.add(v));
    sketch
}

/// Values [`encode_values`] writes without building a sketch; more go through one.
const FEW: usize = 256;

/// The column's text for the sketch of `values` (added in this order): what [`encode`] gives for it,
/// byte for byte. Up to 256 values (a minute or five of a scrape) it writes their bins from the
/// values' keys, sorted, instead of building the crate's sketch, whose dense store allocates and
/// clears 128 bins or more to hold six values; the bins, keys and summary are the same.
pub fn encode_values(values: &[f64], config: &Config) -> String {
    let sketched = || encode(&sketch_of(values, config));
    if values.len() > FEW {
        return sketched();
    }
    // Positive values' keys from the front, negative values' from the back, as the sketch's two
    // stores would hold them; the summary as the sketch keeps it, in the same order.
    let mut keys = [0i32; FEW];
    let (mut positives, mut negatives_from) = (0, values.len());
    let (mut zeros, mut min, mut max, mut sum) = (0u64, f64::INFINITY, f64::NEG_INFINITY, 0.0);
    let near_zero = config.min_possible();
    for &v in values {
        if v > near_zero {
            keys[positives] = config.key(v);
            positives += 1;
        } else if v < -near_zero {
            negatives_from -= 1;
            keys[negatives_from] = config.key(-v);
        } else {
            zeros += 1;
        }
        min = if v < min { v } else { min };
        max = if max < v { v } else { max };
        sum += v;
    }
    let (positive, rest) = keys[..values.len()].split_at_mut(positives);
    let negative = &mut rest[negatives_from - positives..];
    for keys in [&mut *positive, &mut *negative] {
        keys.sort_unstable();
        // Past the bin limit the sketch collapses its lowest bins: leave that to it.
        if let (Some(&low), Some(&high)) = (keys.first(), keys.last())
            && i64::from(high) - i64::from(low) >= i64::from(config.max_num_bins)
        {
            return sketched();
        }
    }
    let mut out = Vec::with_capacity(48 + 4 * values.len());
    if !values.is_empty() {
        out.push(Flag::COUNT);
        var_double(&mut out, values.len() as f64);
        out.push(Flag::MIN);
        out.extend_from_slice(&min.to_le_bytes());
        out.push(Flag::MAX);
        out.extend_from_slice(&max.to_le_bytes());
    }
    if sum != 0.0 {
        out.push(Flag::SUM);
        out.extend_from_slice(&sum.to_le_bytes());
    }
    out.push(Flag::LOG_MAPPING);
    out.extend_from_slice(&config.gamma.to_le_bytes());
    out.extend_from_slice(&0.0f64.to_le_bytes());
    if zeros > 0 {
        out.push(Flag::ZERO_COUNT);
        var_double(&mut out, zeros as f64);
    }
    bins(&mut out, positive, Flag::POSITIVE_BINS);
    bins(&mut out, negative, Flag::NEGATIVE_BINS);
    BASE64_STANDARD.encode(out)
}

/// Flag bytes of DataDog's encoding: a 6-bit subflag over a 2-bit type (0 summary and features,
/// 1 positive store, 2 index mapping, 3 negative store).
struct Flag;

impl Flag {
    const COUNT: u8 = 0x28 << 2;
    const SUM: u8 = 0x21 << 2;
    const MIN: u8 = 0x22 << 2;
    const MAX: u8 = 0x23 << 2;
    const ZERO_COUNT: u8 = 1 << 2;
    /// Logarithmic mapping, then its gamma and index offset as little-endian doubles.
    const LOG_MAPPING: u8 = 2;
    /// Bins as (index delta, count) pairs.
    const POSITIVE_BINS: u8 = (1 << 2) | 1;
    const NEGATIVE_BINS: u8 = (1 << 2) | 3;
}

/// A store's bins from its values' sorted keys: how many, then each bin's key (as the difference
/// from the previous, zigzag) and count. DataDog's unsigned varint is LEB128 but for a ninth byte
/// holding eight bits, from 2^56 on, which neither a bin count nor a zigzagged i32 key delta reaches.
fn bins(out: &mut Vec<u8>, sorted_keys: &[i32], flag: u8) {
    if sorted_keys.is_empty() {
        return;
    }
    out.push(flag);
    varint(out, sorted_keys.chunk_by(|a, b| a == b).count() as u64);
    let mut previous = 0i64;
    for run in sorted_keys.chunk_by(|a, b| a == b) {
        let delta = i64::from(run[0]) - previous;
        varint(out, ((delta << 1) ^ (delta >> 63)) as u64);
        var_double(out, run.len() as f64);
        previous = i64::from(run[0]);
    }
}

/// A double as DataDog's variable-length form: the bits of `value + 1` less those of 1, rotated left
/// by six (small integers become a few high bits), written seven bits a byte from the top while any
/// are left, the high bit saying more follow; a ninth byte holds the last eight.
fn var_double(out: &mut Vec<u8>, value: f64) {
    let mut bits = (value + 1.0).to_bits().wrapping_sub(1f64.to_bits()).rotate_left(6);
    for _ in 0..8 {
        let byte = (bits >> 57) as u8;
        bits <<= 7;
        if bits == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
    out.push((bits >> 56) as u8);
}

/// A sketch as the column stores it.
pub fn encode(sketch: &DDSketch) -> String {
    BASE64_STANDARD.encode(sketch.to_java_bytes())
}

/// A sketch from the column. Its relative accuracy is the writer's; its bin limit the default (2 048).
///
/// The text may come from anywhere (a SQL literal, a row written by another tool), so it is walked
/// first with `check_encoding`: `sketches-ddsketch` trusts its input and overflows, or panics, on
/// crafted keys and counts.
pub fn decode(stored: &str) -> Result<DDSketch, String> {
    let bytes = BASE64_STANDARD.decode(stored).map_err(|e| format!("sketch is not base64: {e}"))?;
    check_encoding(&bytes).map_err(|e| format!("sketch is not a DDSketch encoding Yaffle reads: {e}"))?;
    DDSketch::from_java_bytes(&bytes).map_err(|e| format!("sketch is not a DDSketch encoding: {e}"))
}

/// Largest |key| accepted: a gamma of 1 + 2e-4 (relative accuracy 1e-4) maps the largest double to
/// about 3.5 M; 2^24 leaves the store's `i32` key arithmetic far from overflow.
const MAX_KEY: i64 = 1 << 24;
/// Most values one stored sketch may count (a trillion): merging millions of them stays in `u64`.
const MAX_COUNT: f64 = (1u64 << 40) as f64;

/// Walks DataDog's encoding exactly as `DDSketch::from_java_bytes` reads it and refuses what would
/// make the crate, or a later merge or quantile, overflow: keys past [`MAX_KEY`], counts that are
/// negative, fractional-huge or past [`MAX_COUNT`] in all, a gamma that is not a finite number above
/// 1, index mappings other than the logarithmic one, and unknown flags.
fn check_encoding(bytes: &[u8]) -> Result<(), String> {
    let mut input = bytes;
    // The crate skips a version byte 2 when a valid flag follows it.
    if let [2, next, ..] = input
        && is_flag(*next)
    {
        input = &input[1..];
    }
    let mut total = 0.0;
    let mut count = |c: f64| {
        if !(0.0..=MAX_COUNT).contains(&c) {
            return Err(format!("bin count {c} out of range"));
        }
        total += c;
        if total > MAX_COUNT { Err(format!("more than {MAX_COUNT} values")) } else { Ok(()) }
    };
    while let Some((&flag, rest)) = input.split_first() {
        input = rest;
        match flag {
            Flag::LOG_MAPPING => {
                let gamma = read_f64(&mut input)?;
                let offset = read_f64(&mut input)?;
                if !(gamma.is_finite() && gamma > 1.0 + 1e-6 && gamma <= 4.0 && offset.is_finite()) {
                    return Err(format!("index mapping gamma {gamma}, offset {offset}"));
                }
            }
            Flag::ZERO_COUNT => count(read_var_double(&mut input)?)?,
            Flag::COUNT => {
                read_var_double(&mut input)?;
            }
            Flag::SUM | Flag::MIN | Flag::MAX => {
                if read_f64(&mut input)?.is_nan() {
                    return Err("NaN summary".into());
                }
            }
            _ if matches!(flag & 3, 1 | 3) && (1..=3).contains(&(flag >> 2)) => {
                let bins = read_varint(&mut input)?;
                if bins > input.len() as u64 {
                    return Err(format!("{bins} bins in {} bytes", input.len()));
                }
                let key = |k: i64| if k.abs() > MAX_KEY { Err(format!("bin key {k} out of range")) } else { Ok(k) };
                let signed = |input: &mut &[u8]| read_varint(input).map(|u| ((u >> 1) as i64) ^ -((u & 1) as i64));
                match flag >> 2 {
                    // Index deltas and counts; index deltas (a count of 1 each).
                    mode @ (1 | 2) => {
                        let mut index = 0i64;
                        for _ in 0..bins {
                            index = key(index + key(signed(&mut input)?)?)?;
                            count(if mode == 1 { read_var_double(&mut input)? } else { 1.0 })?;
                        }
                    }
                    // Contiguous counts from a start index, a delta apart.
                    _ => {
                        let (mut index, delta) = (key(signed(&mut input)?)?, key(signed(&mut input)?)?);
                        for _ in 0..bins {
                            count(read_var_double(&mut input)?)?;
                            index = key(index + delta)?;
                        }
                    }
                }
            }
            other => return Err(format!("unsupported flag byte {other:#04x}")),
        }
    }
    Ok(())
}

/// The flags the crate counts as valid after a version byte.
fn is_flag(b: u8) -> bool {
    matches!(b, Flag::ZERO_COUNT | Flag::COUNT | Flag::SUM | Flag::MIN | Flag::MAX | Flag::LOG_MAPPING)
        || (matches!(b & 3, 1 | 3) && (1..=3).contains(&(b >> 2)))
        || (b & 3 == 2 && b >> 2 <= 4)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err("truncated".into());
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn read_f64(input: &mut &[u8]) -> Result<f64, String> {
    Ok(f64::from_le_bytes(take(input, 8)?.try_into().expect("8 bytes")))
}

/// DataDog's unsigned varint (see [`bins`]).
fn read_varint(input: &mut &[u8]) -> Result<u64, String> {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let b = take(input, 1)?[0];
        if b < 0x80 || shift == 56 {
            return Ok(value | (u64::from(b) << shift));
        }
        value |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
}

/// The inverse of [`var_double`].
fn read_var_double(input: &mut &[u8]) -> Result<f64, String> {
    let (mut bits, mut shift) = (0u64, 57);
    loop {
        let b = take(input, 1)?[0];
        if shift == 1 {
            bits |= u64::from(b);
            break;
        }
        bits |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift -= 7;
    }
    Ok(f64::from_bits(bits.rotate_right(6).wrapping_add(1f64.to_bits())) - 1.0)
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
        let mut sketch = DDSketch::new(config(0.01, 2048));
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

    /// Metric-like values, exact zeros, values too near zero for a bin, and a few far enough apart to
    /// need more bins than a sketch may keep.
    fn value() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            4 => -1e4..1e4f64,
            2 => 0.5..2.0f64,
            1 => Just(0.0),
            1 => -1e-10..1e-10f64,
            1 => prop_oneof![Just(1e-8), Just(-3e-7), Just(1e200), Just(-1e250), Just(f64::MAX)],
        ]
    }

    proptest::proptest! {
        #[test]
        fn values_are_stored_as_the_sketch_of_them_would_be(
            values in proptest::collection::vec(value(), 0..300),
            accuracy in 0.001..0.2f64,
            max_bins in proptest::prop_oneof![1..8u32, 100..300u32, proptest::strategy::Just(2048u32)],
        ) {
            let mut sketch = DDSketch::new(config(accuracy, max_bins));
            values.iter().for_each(|&v| sketch.add(v));
            proptest::prop_assert_eq!(encode_values(&values, &config(accuracy, max_bins)), encode(&sketch));
        }
    }

    #[test]
    fn values_just_past_the_bin_limit_are_stored_as_the_collapsed_sketch_of_them() {
        for max_bins in 1..6 {
            let c = config(0.01, max_bins);
            for span in [max_bins - 1, max_bins, max_bins + 1] {
                // Keys 0 and `span`: `span + 1` bins, one too many once `span` reaches the limit.
                let values = [1.0, -1.0, c.gamma.powi(span as i32) * 1.001, -c.gamma.powi(span as i32) * 1.001];
                let mut sketch = DDSketch::new(c);
                values.iter().for_each(|&v| sketch.add(v));
                assert_eq!(encode_values(&values, &c), encode(&sketch), "{max_bins} bins, keys 0 and {span}");
            }
        }
    }

    /// Merges and takes quantiles of whatever [`decode`] accepts: nothing here may panic.
    fn exercise(stored: &str) {
        if let Ok(sketch) = decode(stored) {
            let mut merged = sketch_of(&[1.0, 2.0], &config(0.01, 2048));
            let _ = merged.merge(&sketch);
            let mut twice = sketch.clone();
            let _ = twice.merge(&sketch);
            for q in [0.0, 0.01, 0.5, 0.99, 1.0] {
                let _ = sketch.quantile(q);
                let _ = twice.quantile(q);
                let _ = merged.quantile(q);
            }
        }
    }

    /// Crafted bins that overflowed the crate's key arithmetic or counts, and foreign mappings.
    #[test]
    fn crafted_sketches_are_refused_with_an_error_not_a_panic() {
        let mut far = vec![Flag::LOG_MAPPING];
        far.extend_from_slice(&1.02f64.to_le_bytes());
        far.extend_from_slice(&0f64.to_le_bytes());
        far.push(Flag::POSITIVE_BINS);
        varint(&mut far, 2);
        for delta in [i32::MAX as i64, i32::MAX as i64] {
            varint(&mut far, ((delta << 1) ^ (delta >> 63)) as u64);
            var_double(&mut far, 1.0);
        }
        let e = decode(&BASE64_STANDARD.encode(&far)).err().unwrap();
        assert!(e.contains("bin key 2147483647 out of range"), "{e}");

        let mut huge = vec![Flag::ZERO_COUNT];
        var_double(&mut huge, 1e30);
        assert!(decode(&BASE64_STANDARD.encode(&huge)).err().unwrap().contains("bin count"));

        let mut gamma = vec![Flag::LOG_MAPPING];
        gamma.extend_from_slice(&f64::NAN.to_le_bytes());
        gamma.extend_from_slice(&0f64.to_le_bytes());
        assert!(decode(&BASE64_STANDARD.encode(&gamma)).err().unwrap().contains("gamma NaN"));
        assert!(decode(&BASE64_STANDARD.encode([0x06u8])).err().unwrap().contains("unsupported flag byte 0x06"));
        let good = encode_values(&[1.0, 5.0, -3.0, 0.0], &config(0.01, 2048));
        assert_eq!(decode(&good).unwrap().count(), 4);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            exercise(&BASE64_STANDARD.encode(&bytes));
        }

        /// Valid encodings with bytes changed: the cases a fuzzer finds first.
        #[test]
        fn mutated_sketches_never_panic(
            values in proptest::collection::vec(-1e6..1e6f64, 1..20),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..4),
        ) {
            let mut bytes = BASE64_STANDARD.decode(encode_values(&values, &config(0.01, 2048))).unwrap();
            for (at, b) in edits {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            exercise(&BASE64_STANDARD.encode(&bytes));
        }
    }
}
