//! Tumbling event-time windows at several resolutions over one partition's points.
//!
//! - **Alignment.** A window of resolution `r` is `[k*r, (k+1)*r)` in Unix nanoseconds, the same for
//!   every series, so rollups from any worker, a replay or a backfill line up.
//! - **Watermark.** The partition's watermark is the largest point timestamp read so far. A window is
//!   emitted, once, when the watermark reaches its end plus the allowed lateness.
//! - **Late points.** A point whose window of some resolution was already closed (end + lateness at or
//!   before the watermark when the point is read) is not folded into that resolution (never into
//!   another window); it is counted per measurement in [`Windows::take_late`]. It may still count at a
//!   coarser resolution whose window is open.
//! - **Resuming.** [`Windows::resume`] takes the watermark up to which windows were already emitted
//!   (kept with the consumer's offset commit). Windows closing at or before it are rebuilt by the
//!   replay but not emitted again, and their points are not counted as late a second time.
//! - **State.** Series and field names are interned: open windows are keyed by (series id, field
//!   number); the series key is held once per series.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use yaffle_core::{Point, SeriesKey};

use crate::aggregate::{Aggregate, SketchConfig};

/// Resolutions, lateness and sketch settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    /// Window lengths (e.g. 1m, 5m, 1h).
    pub resolutions: Vec<Duration>,
    /// How long after a window's end its points are still accepted.
    pub allowed_lateness: Duration,
    /// The quantile sketch, `None` to keep none.
    pub sketch: Option<SketchConfig>,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            resolutions: [60, 300, 3600].map(Duration::from_secs).to_vec(),
            allowed_lateness: Duration::from_secs(30),
            sketch: Some(SketchConfig::default()),
        }
    }
}

impl WindowConfig {
    /// How far before the emitted watermark a replay must start (in event time) to rebuild every window
    /// still open there: the longest resolution plus the lateness.
    pub fn replay_span(&self) -> Duration {
        self.resolutions.iter().max().copied().unwrap_or_default() + self.allowed_lateness
    }
}

/// A closed window of one (series, field) at one resolution.
#[derive(Debug, Clone)]
pub struct Rollup {
    /// The series.
    pub series: Arc<SeriesKey>,
    /// The field.
    pub field: Arc<str>,
    /// The window's length.
    pub resolution: Duration,
    /// The window's start (ns since the epoch).
    pub window_start: i64,
    /// The window's aggregates.
    pub aggregate: Aggregate,
}

#[derive(Debug)]
struct Open {
    resolution: u8,
    start: i64,
    aggregate: Aggregate,
}

/// One partition's open windows.
#[derive(Debug)]
pub struct Windows {
    resolutions: Vec<i64>,
    lateness: i64,
    sketch: Option<SketchConfig>,
    watermark: i64,
    emitted_through: i64,
    /// Windows closing at or before this were emitted by an earlier worker (see [`Windows::resume`]).
    resumed_through: i64,
    /// The earliest `end + lateness` among open windows: nothing closes before the watermark gets there.
    next_close: i64,
    series: HashMap<u64, Arc<SeriesKey>>,
    fields: HashMap<Arc<str>, u32>,
    field_names: Vec<Arc<str>>,
    open: HashMap<(u64, u32), Vec<Open>>,
    late: HashMap<Arc<str>, u64>,
}

impl Windows {
    /// No window open, nothing emitted yet.
    pub fn new(config: &WindowConfig) -> Self {
        assert!(config.resolutions.len() <= u8::MAX as usize, "too many resolutions");
        Self {
            resolutions: config.resolutions.iter().map(|r| r.as_nanos() as i64).collect(),
            lateness: config.allowed_lateness.as_nanos() as i64,
            sketch: config.sketch,
            watermark: i64::MIN,
            emitted_through: i64::MIN,
            resumed_through: i64::MIN,
            next_close: i64::MAX,
            series: HashMap::new(),
            fields: HashMap::new(),
            field_names: Vec::new(),
            open: HashMap::new(),
            late: HashMap::new(),
        }
    }

    /// Windows closing at or before the watermark `emitted_through` were emitted before: rebuild them
    /// from a replay without emitting them again.
    pub fn resume(&mut self, emitted_through: i64) {
        self.resumed_through = self.resumed_through.max(emitted_through);
        self.emitted_through = self.emitted_through.max(emitted_through);
    }

    /// The largest timestamp read, `i64::MIN` before the first point.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The watermark up to which windows have been emitted (what to record with a commit).
    pub fn emitted_through(&self) -> i64 {
        self.emitted_through
    }

    /// Open (series, field) entries: the state's size.
    pub fn open_series_fields(&self) -> usize {
        self.open.len()
    }

    /// Folds a point's numeric fields into their open windows.
    pub fn add(&mut self, point: &Point) {
        let ts = point.timestamp;
        let id = point.series_id.0;
        for (name, value) in &point.fields {
            let Some(v) = value.as_f64() else { continue };
            let field = self.intern(name);
            let mut known = false;
            for (r, &res) in self.resolutions.iter().enumerate() {
                let start = ts.div_euclid(res) * res;
                let close = start.saturating_add(res).saturating_add(self.lateness);
                if close <= self.watermark || close <= self.resumed_through {
                    // Closed already; a replay of a window emitted before is not news.
                    if close > self.resumed_through {
                        *self.late.entry(Arc::from(point.series.measurement())).or_default() += 1;
                    }
                    continue;
                }
                let windows = self.open.entry((id, field)).or_default();
                match windows.iter_mut().find(|w| w.resolution as usize == r && w.start == start) {
                    Some(w) => w.aggregate.add(ts, v),
                    None => {
                        windows.push(Open {
                            resolution: r as u8,
                            start,
                            aggregate: Aggregate::new(ts, v, self.sketch.as_ref()),
                        });
                        self.next_close = self.next_close.min(close);
                    }
                }
                known = true;
            }
            if known && !self.series.contains_key(&id) {
                self.series.insert(id, Arc::clone(&point.series));
            }
        }
        self.watermark = self.watermark.max(ts);
    }

    /// Emits every window the watermark has closed (those closing at or before the resume point are
    /// dropped, already emitted).
    pub fn advance(&mut self) -> Vec<Rollup> {
        self.close(self.watermark)
    }

    /// Emits every open window, as at the end of a bounded backfill.
    pub fn flush(&mut self) -> Vec<Rollup> {
        self.close(i64::MAX)
    }

    /// Late points per measurement since the last call.
    pub fn take_late(&mut self) -> HashMap<Arc<str>, u64> {
        std::mem::take(&mut self.late)
    }

    fn close(&mut self, watermark: i64) -> Vec<Rollup> {
        let out = if watermark >= self.next_close { self.emit(watermark) } else { Vec::new() };
        if watermark != i64::MAX {
            self.emitted_through = self.emitted_through.max(watermark);
        }
        out
    }

    /// Removes the windows closing at or before `watermark`, returning those not emitted before.
    fn emit(&mut self, watermark: i64) -> Vec<Rollup> {
        let mut out = Vec::new();
        let Self { resolutions, lateness, resumed_through, open, series, field_names, .. } = self;
        let mut next_close = i64::MAX;
        open.retain(|&(id, field), windows| {
            windows.retain_mut(|w| {
                let res = resolutions[w.resolution as usize];
                let close = w.start.saturating_add(res).saturating_add(*lateness);
                if close > watermark {
                    next_close = next_close.min(close);
                    return true;
                }
                if close > *resumed_through {
                    let aggregate = std::mem::replace(&mut w.aggregate, Aggregate::new(0, 0.0, None));
                    out.push(Rollup {
                        series: Arc::clone(&series[&id]),
                        field: Arc::clone(&field_names[field as usize]),
                        resolution: Duration::from_nanos(res as u64),
                        window_start: w.start,
                        aggregate,
                    });
                }
                false
            });
            !windows.is_empty()
        });
        self.next_close = next_close;
        // Forget series with nothing open.
        let live: std::collections::HashSet<u64> = self.open.keys().map(|&(id, _)| id).collect();
        self.series.retain(|id, _| live.contains(id));
        out
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.fields.get(name) {
            return n;
        }
        let n = self.field_names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.field_names.push(Arc::clone(&name));
        self.fields.insert(name, n);
        n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use yaffle_core::FieldValue;

    use super::*;

    const S: i64 = 1_000_000_000;

    fn config() -> WindowConfig {
        WindowConfig {
            resolutions: vec![Duration::from_secs(60), Duration::from_secs(300)],
            allowed_lateness: Duration::from_secs(10),
            sketch: None,
        }
    }

    fn point(host: &str, ts: i64, v: f64) -> Point {
        let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), host.into())]));
        Point::new(
            key,
            vec![("usage".into(), FieldValue::Float(v)), ("note".into(), FieldValue::String("x".into()))],
            ts,
        )
    }

    /// (host, field, resolution s, start) -> (count, sum, min, max, first, last)
    type Table = BTreeMap<(String, String, u64, i64), (u64, f64, f64, f64, (i64, f64), (i64, f64))>;

    fn table(rollups: &[Rollup]) -> Table {
        let mut t = Table::new();
        for r in rollups {
            let a = &r.aggregate;
            let key = (
                r.series.tag("host").unwrap().to_string(),
                r.field.to_string(),
                r.resolution.as_secs(),
                r.window_start,
            );
            assert!(
                t.insert(key.clone(), (a.count, a.sum, a.min, a.max, a.first, a.last)).is_none(),
                "{key:?} emitted twice"
            );
        }
        t
    }

    /// The batch recomputation: every point, in log order, into its windows.
    fn batch(points: &[Point], config: &WindowConfig) -> Table {
        let mut t = Table::new();
        for p in points {
            for res in &config.resolutions {
                let r = res.as_nanos() as i64;
                let start = p.timestamp.div_euclid(r) * r;
                let v = p.fields[0].1.as_f64().unwrap();
                let key = (p.series.tag("host").unwrap().to_string(), "usage".to_string(), res.as_secs(), start);
                t.entry(key)
                    .and_modify(|e| {
                        e.0 += 1;
                        e.1 += v;
                        e.2 = e.2.min(v);
                        e.3 = e.3.max(v);
                        if p.timestamp < e.4.0 {
                            e.4 = (p.timestamp, v);
                        }
                        if p.timestamp >= e.5.0 {
                            e.5 = (p.timestamp, v);
                        }
                    })
                    .or_insert((1, v, v, v, (p.timestamp, v), (p.timestamp, v)));
            }
        }
        t
    }

    #[test]
    fn a_window_is_emitted_once_the_watermark_passes_its_end_plus_lateness() {
        let mut w = Windows::new(&config());
        w.add(&point("a", 5 * S, 1.0));
        w.add(&point("a", 65 * S, 2.0));
        assert!(w.advance().is_empty(), "1m window [0, 60) closes at 70 s");
        w.add(&point("a", 70 * S, 3.0));
        let out = w.advance();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].window_start, out[0].resolution.as_secs(), out[0].aggregate.count), (0, 60, 1));
        assert!(w.advance().is_empty(), "emitted once");
        assert_eq!(w.emitted_through(), 70 * S);
    }

    #[test]
    fn a_late_point_is_counted_and_not_folded_into_another_window() {
        let mut w = Windows::new(&config());
        w.add(&point("a", 5 * S, 1.0));
        w.add(&point("a", 71 * S, 2.0));
        assert_eq!(w.advance().len(), 1);
        // [0, 60) of 1m is closed; [0, 300) of 5m is still open and takes it.
        w.add(&point("a", 30 * S, 9.0));
        assert_eq!(w.take_late().get("cpu"), Some(&1));
        let out = table(&w.flush());
        assert_eq!(out[&("a".into(), "usage".into(), 300, 0)].0, 3);
        assert_eq!(out[&("a".into(), "usage".into(), 60, 60 * S)].0, 1);
        assert!(!out.contains_key(&("a".into(), "usage".into(), 60, 0)), "the closed window was emitted before");
    }

    /// Points of a few series, each at most `disorder` seconds behind the newest so far.
    fn points_strategy() -> impl Strategy<Value = Vec<Point>> {
        prop::collection::vec((0..4usize, 0..8i64, -1000.0..1000.0f64), 1..400).prop_map(|raw| {
            let mut t = 1_700_000_000 * S;
            raw.into_iter()
                .map(|(host, back, v)| {
                    t += 3 * S;
                    point(&format!("h{host}"), t - back * S, v)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Streamed in any chunking, the rollups equal a batch recomputation over the points.
        #[test]
        fn streamed_rollups_equal_a_batch_recomputation(points in points_strategy(), chunk in 1..50usize) {
            let c = config();
            let mut w = Windows::new(&c);
            let mut out = Vec::new();
            for part in points.chunks(chunk) {
                for p in part {
                    w.add(p);
                }
                out.extend(w.advance());
            }
            out.extend(w.flush());
            prop_assert!(w.take_late().is_empty());
            prop_assert_eq!(table(&out), batch(&points, &c));
        }

        /// A worker that stops anywhere and a new one that resumes from the emitted watermark, replaying
        /// from `replay_span` before it, together emit every window exactly once, as one run would.
        #[test]
        fn resuming_from_the_emitted_watermark_neither_loses_nor_repeats_a_window(
            points in points_strategy(), stop_at in 0..400usize,
        ) {
            let c = config();
            let stop_at = stop_at.min(points.len());
            let mut first = Windows::new(&c);
            let mut out = Vec::new();
            for p in &points[..stop_at] {
                first.add(p);
                out.extend(first.advance());
            }
            let emitted = first.emitted_through();
            // Seek by time: the first point read at or after (watermark - replay span - disorder).
            let from = emitted.saturating_sub(c.replay_span().as_nanos() as i64 + 8 * S);
            let start = points.iter().position(|p| p.timestamp >= from).unwrap_or(points.len()).min(stop_at);
            let mut second = Windows::new(&c);
            second.resume(emitted);
            for p in &points[start..] {
                second.add(p);
                out.extend(second.advance());
            }
            out.extend(second.flush());
            prop_assert_eq!(table(&out), batch(&points, &c));
        }
    }
}
