//! Tumbling event-time windows at several resolutions over one partition's points.
//!
//! - **Alignment.** A window of resolution `r` is `[k*r, (k+1)*r)` in Unix nanoseconds, the same for
//!   every series, so rollups from any worker, a replay or a backfill line up.
//! - **Watermark.** The partition's watermark is the largest point timestamp read so far. A window is
//!   emitted, once, when the watermark reaches its end plus the allowed lateness.
//! - **Late points.** A point whose window of some resolution was already closed (end + lateness at or
//!   before the watermark when the point is read) is not folded into that resolution (never into
//!   another window); it is counted per measurement in [`Windows::take_late`], once per resolution it
//!   missed. It may still count at a coarser resolution whose window is open.
//! - **Resuming.** [`Windows::resume`] takes the watermark up to which windows were already emitted
//!   (kept with the consumer's offset commit). Windows closing at or before it are rebuilt by the
//!   replay but not emitted again, and their points are not counted as late a second time.
//! - **Cascade.** Points are folded into the finest resolution only; a coarser resolution that is a
//!   multiple of a finer one is built from that one's closed windows (a 1h window from its twelve 5m
//!   windows, each from five 1m windows), and a point too late for the finer window goes straight to
//!   the coarser one if that is still open. A resolution that is no multiple of a finer one is fed
//!   points directly. Count, min, max, first and last are the same either way; a sum is the sum of the
//!   finer windows' sums, which for non-integer floats may differ from a point-by-point sum in the
//!   last bits. Between points with equal timestamps, `first` and `last` follow log order, except when
//!   one of them reached a coarse window directly as late.
//! - **State.** Each (series id, field number) gets a slot; each open window of a resolution is a
//!   dense array of 64-byte aggregates indexed by slot, allocated in chunks as slots are touched.
//!   With sketches on, a window also keeps the values to sketch: the points' values in one array in
//!   arrival order, with their slots, up to 128 per slot (an add writes to the array's end, not to a
//!   buffer of its own slot); past 128 a slot's further values go into a DDSketch of the slot (a
//!   sketch's dense store takes 1 KiB or more from its first value). When the window closes, the
//!   array is grouped by slot (a counting sort) and each slot's values are sketched for its row (up
//!   to 256 values written as the stored sketch of them directly, without building one) and handed
//!   to the coarser windows, which keep per slot what they are given: the values themselves up to
//!   128, a DDSketch past that. NaN (a staleness marker) and infinities count in the aggregates but
//!   are kept out of the sketch, which has no bin for them.
//!   Measurement, tag and field strings are interned: a series is held as a list of string numbers,
//!   each distinct string once per partition. A slot whose windows have all closed is freed, with its
//!   series' strings once no slot of the series is left.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use yaffle_core::batch::{BatchReader, DecodeError};
use yaffle_core::{Point, SeriesKey};

use crate::aggregate::{Aggregate, Quantiles, RAW_VALUES, SketchConfig};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Resolutions, lateness and sketch settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    /// Window lengths (e.g. 1m, 5m, 1h).
    pub resolutions: Vec<Duration>,
    /// How long after a window's end its points are still accepted.
    pub allowed_lateness: Duration,
    /// The quantile sketch, `None` to keep none.
    pub sketch: Option<SketchConfig>,
    /// Points further than this ahead of their record's ingest time are dropped (and counted): one
    /// bad clock cannot move the watermark, and with it every later point, into the future. The bound
    /// is the record's time, not the wall clock, so a replay drops the same points.
    pub max_future: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            resolutions: [60, 300, 3600].map(Duration::from_secs).to_vec(),
            allowed_lateness: Duration::from_secs(30),
            sketch: Some(SketchConfig::default()),
            max_future: Duration::from_secs(2 * 86_400),
        }
    }
}

impl WindowConfig {
    /// Where a replay must start (in event time, ns) to rebuild every window still open at the emitted
    /// watermark `emitted_through`: the start of the oldest one, over all resolutions. A window of
    /// resolution `r` is closed at `t` once `start + r + lateness <= t`, so the oldest open one starts
    /// at the first multiple of `r` after `t - r - lateness`. With 1m, 5m and 1h and 30 s of lateness
    /// that is the current hour's start (the previous hour's during the first 30 s of an hour): on
    /// average half an hour back, where the longest resolution plus the lateness would be an hour.
    pub fn replay_start(&self, emitted_through: i64) -> i64 {
        let lateness = self.allowed_lateness.as_nanos() as i64;
        self.resolutions
            .iter()
            .map(|r| {
                let r = r.as_nanos() as i64;
                let after = emitted_through.saturating_sub(r).saturating_sub(lateness);
                after.div_euclid(r).saturating_mul(r).saturating_add(r)
            })
            .min()
            .unwrap_or(emitted_through)
    }
}

/// A closed window of one (series, field) at one resolution.
#[derive(Debug, Clone)]
pub struct Rollup {
    /// The series' id.
    pub series_id: u64,
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
    /// The window's quantile sketch as the rollups' `sketch` column stores it (see
    /// [`yaffle_store::sketch`]); empty when sketches are off or no value could be sketched (NaN, an
    /// infinity: they count in the aggregate but no sketch holds them).
    pub sketch: String,
}

/// Slots per chunk of a window's aggregate array (64 KiB).
const CHUNK: usize = 1024;

/// One open window of one resolution: an aggregate per slot (count 0: nothing in it) and, when
/// sketches are on, the values to sketch.
#[derive(Debug)]
struct Window {
    start: i64,
    chunks: Vec<Option<Box<[Aggregate]>>>,
    /// Values added one by one, while their slot holds at most [`RAW_VALUES`] in this window.
    added: Added,
    /// Per slot: what closed finer windows merged in, and a slot's added values past [`RAW_VALUES`].
    quantiles: Vec<Quantiles>,
}

/// Values in arrival order and their slots: an add writes to the end of two arrays instead of to a
/// buffer of the value's slot, which is somewhere else in memory for every value.
#[derive(Debug, Default)]
struct Added {
    slots: Vec<u32>,
    values: Vec<f64>,
}

/// A closed window's added values grouped by slot (a counting sort of [`Added`]), each slot's in
/// arrival order.
#[derive(Default)]
struct Runs {
    /// Where each slot's values end in `values` (they start where the previous slot's end).
    ends: Vec<u32>,
    values: Vec<f64>,
}

impl Runs {
    fn of(added: &Added, slots: usize) -> Self {
        if added.values.is_empty() {
            return Self::default();
        }
        // Counts, then where each slot starts, then (after placing the values) where it ends.
        let mut ends = vec![0u32; slots];
        added.slots.iter().for_each(|&s| ends[s as usize] += 1);
        let mut at = 0;
        for e in &mut ends {
            (*e, at) = (at, at + *e);
        }
        let mut values = vec![0.0; added.values.len()];
        for (&s, &v) in added.slots.iter().zip(&added.values) {
            let end = &mut ends[s as usize];
            values[*end as usize] = v;
            *end += 1;
        }
        Self { ends, values }
    }

    /// The values of `slot`.
    fn get(&self, slot: usize) -> &[f64] {
        let Some(&end) = self.ends.get(slot) else { return &[] };
        let start = if slot == 0 { 0 } else { self.ends[slot - 1] };
        &self.values[start as usize..end as usize]
    }
}

impl Window {
    fn new(start: i64) -> Self {
        Self { start, chunks: Vec::new(), added: Added::default(), quantiles: Vec::new() }
    }

    fn chunk(&mut self, c: usize) -> &mut [Aggregate] {
        if c >= self.chunks.len() {
            self.chunks.resize_with(c + 1, || None);
        }
        self.chunks[c].get_or_insert_with(|| vec![Aggregate::EMPTY; CHUNK].into_boxed_slice())
    }

    fn slot(&mut self, slot: u32) -> &mut Aggregate {
        &mut self.chunk(slot as usize / CHUNK)[slot as usize % CHUNK]
    }

    fn quantiles(&mut self, slot: usize) -> &mut Quantiles {
        if slot >= self.quantiles.len() {
            self.quantiles.resize_with(slot + 1, Quantiles::default);
        }
        &mut self.quantiles[slot]
    }

    fn add(&mut self, slot: u32, ts: i64, v: f64, sketch: Option<&SketchConfig>) {
        let a = self.slot(slot);
        a.add(ts, v);
        let count = a.count as usize;
        if let Some(c) = sketch.filter(|_| v.is_finite()) {
            if count <= RAW_VALUES {
                self.added.slots.push(slot);
                self.added.values.push(v);
            } else {
                self.quantiles(slot as usize).sketch(c).add(v);
            }
        }
    }

    /// Folds `other`, a finer window within this one that just closed, with its added values grouped
    /// in `runs`, into this one.
    fn merge(&mut self, other: &Window, runs: &Runs, sketch: Option<&SketchConfig>) {
        for (c, chunk) in other.chunks.iter().enumerate() {
            let Some(chunk) = chunk else { continue };
            for (into, a) in self.chunk(c).iter_mut().zip(chunk.iter()) {
                into.merge(a);
            }
        }
        let Some(config) = sketch else { return };
        for (slot, q) in other.quantiles.iter().enumerate().filter(|(_, q)| !q.is_empty()) {
            self.quantiles(slot).merge(q, config);
        }
        for slot in 0..runs.ends.len() {
            let run = runs.get(slot);
            if !run.is_empty() {
                self.quantiles(slot).extend(run, config);
            }
        }
    }

    /// Marks the slots holding something.
    fn mark(&self, live: &mut [bool]) {
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(chunk) = chunk else { continue };
            for (i, a) in chunk.iter().enumerate() {
                if a.count > 0 {
                    live[c * CHUNK + i] = true;
                }
            }
        }
    }
}

/// The open windows of one resolution, oldest first.
#[derive(Debug)]
struct Level {
    resolution: i64,
    /// Coarser levels built from this one's closed windows.
    children: Vec<usize>,
    /// Fed by points (no finer level it is a multiple of).
    direct: bool,
    open: VecDeque<Window>,
    /// The last window [`Level::start_of`] found, `[start, end)`: consecutive points mostly fall in
    /// the same one, and a 64-bit division costs more than the rest of a fold.
    last: (i64, i64),
}

impl Level {
    fn new(resolution: i64) -> Self {
        Self { resolution, children: Vec::new(), direct: true, open: VecDeque::new(), last: (0, 0) }
    }

    /// The start of the window holding `ts`; before the first representable window start (within
    /// one resolution of `i64::MIN`), that first start.
    fn start(&self, ts: i64) -> i64 {
        let r = self.resolution;
        ts.div_euclid(r).checked_mul(r).unwrap_or((i64::MIN / r) * r)
    }

    /// [`Level::start`], remembering the window for the next point.
    fn start_of(&mut self, ts: i64) -> i64 {
        if !(self.last.0..self.last.1).contains(&ts) {
            let start = self.start(ts);
            self.last = (start, start.saturating_add(self.resolution));
        }
        self.last.0
    }

    /// The open window starting at `start`, created if need be.
    fn window(&mut self, start: i64) -> &mut Window {
        let at = self.open.iter().rposition(|w| w.start <= start);
        match at {
            Some(i) if self.open[i].start == start => &mut self.open[i],
            _ => {
                let i = at.map_or(0, |i| i + 1);
                self.open.insert(i, Window::new(start));
                &mut self.open[i]
            }
        }
    }
}

/// What a slot holds: its (series id, field number) and where its series' strings are in
/// [`Windows::records`]; a free slot's field is [`Slot::FREE`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    series: u64,
    field: u32,
    record: u32,
}

impl Slot {
    const FREE: u32 = u32::MAX;
}

/// A series' strings (database, measurement, then each tag's key and value, as numbers in the
/// string table) and how many slots it has (0: a free record, without strings).
#[derive(Debug)]
struct Series {
    strings: Box<[u32]>,
    slots: u32,
}

/// One value on its way into the windows: series id, field number, time, value, the measurement (for
/// late counts), and how to intern the series' strings if the series is new.
struct Value<'a> {
    id: u64,
    field: u32,
    ts: i64,
    v: f64,
    measurement: &'a str,
    strings: &'a dyn Fn(&mut Interner) -> Box<[u32]>,
}

/// One partition's open windows.
#[derive(Debug)]
pub struct Windows {
    levels: Vec<Level>,
    /// Level indexes, finest first: the order windows close in.
    order: Vec<usize>,
    lateness: i64,
    sketch: Option<SketchConfig>,
    max_future: i64,
    /// Points dropped for being too far ahead, not yet taken by [`Windows::take_future`].
    future: u64,
    watermark: i64,
    emitted_through: i64,
    /// Windows closing at or before this were emitted by an earlier worker (see [`Windows::resume`]).
    resumed_through: i64,
    /// The earliest `end + lateness` among open windows: nothing closes before the watermark gets there.
    next_close: i64,
    slot_of: Map<(u64, u32), u32>,
    slots: Vec<Slot>,
    /// The slot after the last one looked up: values arriving in the order their (series, field)
    /// pairs were first seen (as a scrape's or an agent's do) find their slot here, without a probe
    /// of `slot_of`, whose table is far larger than the cache at a million series.
    next_slot: usize,
    free: Vec<u32>,
    /// Each series' record in `records`.
    series: Map<u64, u32>,
    /// Series records, reached from their slots without a hash probe when windows close.
    records: Vec<Series>,
    free_records: Vec<u32>,
    strings: Interner,
    fields: Interner,
    late: HashMap<Arc<str>, u64>,
}

impl Windows {
    /// No window open, nothing emitted yet.
    pub fn new(config: &WindowConfig) -> Self {
        let resolutions: Vec<i64> = config.resolutions.iter().map(|r| r.as_nanos() as i64).collect();
        let mut order: Vec<usize> = (0..resolutions.len()).collect();
        order.sort_by_key(|&l| resolutions[l]);
        let mut levels: Vec<Level> = resolutions.iter().map(|&resolution| Level::new(resolution)).collect();
        // Each level feeds from the coarsest finer level it is a multiple of.
        for (i, &l) in order.iter().enumerate() {
            let r = resolutions[l];
            if let Some(&source) = order[..i].iter().rev().find(|&&f| resolutions[f] < r && r % resolutions[f] == 0) {
                levels[l].direct = false;
                levels[source].children.push(l);
            }
        }
        Self {
            levels,
            order,
            lateness: config.allowed_lateness.as_nanos() as i64,
            sketch: config.sketch,
            max_future: i64::try_from(config.max_future.as_nanos()).unwrap_or(i64::MAX),
            future: 0,
            watermark: i64::MIN,
            emitted_through: i64::MIN,
            resumed_through: i64::MIN,
            next_close: i64::MAX,
            slot_of: Map::default(),
            slots: Vec::new(),
            next_slot: 0,
            free: Vec::new(),
            series: Map::default(),
            records: Vec::new(),
            free_records: Vec::new(),
            strings: Interner::default(),
            fields: Interner::default(),
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

    /// (series, field) pairs with a window open: the state's size.
    pub fn open_series_fields(&self) -> usize {
        self.slot_of.len()
    }

    /// Folds a point's numeric fields into their open windows.
    pub fn add(&mut self, point: &Point) {
        let key = &point.series;
        let strings = |t: &mut Interner| {
            let mut s = vec![t.intern(key.database()), t.intern(key.measurement())];
            for (k, v) in key.tags() {
                s.extend([t.intern(k), t.intern(v)]);
            }
            s.into_boxed_slice()
        };
        for (name, value) in &point.fields {
            let Some(v) = value.as_f64() else { continue };
            let field = self.fields.intern(name);
            let measurement = key.measurement();
            self.fold(&Value { id: point.series_id.0, field, ts: point.timestamp, v, measurement, strings: &strings });
        }
        self.watermark = self.watermark.max(point.timestamp);
    }

    /// Folds every point of an encoded batch, reading it in place; returns the number of points. A
    /// batch that turns out corrupt part way keeps the points before the fault (the same on every
    /// replay of it). Points more than `max_future` after `record_time` (the record's ingest time,
    /// ns) are dropped and counted.
    pub fn add_batch(&mut self, batch: &mut BatchReader<'_>, record_time: i64) -> Result<usize, DecodeError> {
        let newest = record_time.saturating_add(self.max_future);
        // The batch's field-name string indexes, mapped to field numbers as first seen.
        let mut field_numbers: Vec<u32> = vec![u32::MAX; batch.strings().len()];
        let mut points = 0;
        while let Some(p) = batch.next_point()? {
            points += 1;
            if p.timestamp > newest {
                self.future += 1;
                continue;
            }
            let strings = |t: &mut Interner| {
                let mut s = vec![t.intern(p.string(p.database)), t.intern(p.string(p.measurement))];
                for &(k, v) in p.tags {
                    s.extend([t.intern(p.string(k)), t.intern(p.string(v))]);
                }
                s.into_boxed_slice()
            };
            for &(name, value) in p.fields {
                let Some(v) = value.as_f64() else { continue };
                let n = &mut field_numbers[name as usize];
                if *n == u32::MAX {
                    *n = self.fields.intern(p.string(name));
                }
                let measurement = p.string(p.measurement);
                self.fold(&Value { id: p.series_id.0, field: *n, ts: p.timestamp, v, measurement, strings: &strings });
            }
            self.watermark = self.watermark.max(p.timestamp);
        }
        Ok(points)
    }

    /// Emits every window the watermark has closed to `out` (those closing at or before the resume
    /// point are dropped, already emitted).
    pub fn advance(&mut self, out: &mut dyn FnMut(Rollup)) {
        self.close(self.watermark, out);
    }

    /// Closes the windows the watermark has closed without emitting them, and treats everything through
    /// the watermark as emitted: a replay of records the partition's previous owner read (and emitted
    /// the windows of). Closing them as the replay goes feeds the coarser levels and keeps a rebuild's
    /// open windows as few as a live read's.
    pub fn rebuild(&mut self) {
        self.resume(self.watermark);
        self.advance(&mut |_| {});
    }

    /// Emits every open window to `out`, as at the end of a bounded backfill.
    pub fn flush(&mut self, out: &mut dyn FnMut(Rollup)) {
        self.close(i64::MAX, out);
    }

    /// Late points per measurement since the last call.
    pub fn take_late(&mut self) -> HashMap<Arc<str>, u64> {
        std::mem::take(&mut self.late)
    }

    /// Points dropped for being too far ahead since the last call.
    pub fn take_future(&mut self) -> u64 {
        std::mem::take(&mut self.future)
    }

    fn fold(&mut self, value: &Value<'_>) {
        for l in 0..self.levels.len() {
            if self.levels[l].direct {
                self.route(l, value);
            }
        }
    }

    /// Folds a value into level `l`'s window, or if that has closed, into its coarser levels'.
    fn route(&mut self, l: usize, value: &Value<'_>) {
        let level = &mut self.levels[l];
        let start = level.start_of(value.ts);
        let close = start.saturating_add(level.resolution).saturating_add(self.lateness);
        if close <= self.watermark || close <= self.resumed_through {
            // Closed already; a replay of a window emitted before is not news.
            if close > self.resumed_through {
                match self.late.get_mut(value.measurement) {
                    Some(n) => *n += 1,
                    None => {
                        self.late.insert(Arc::from(value.measurement), 1);
                    }
                }
            }
            for i in 0..self.levels[l].children.len() {
                let child = self.levels[l].children[i];
                self.route(child, value);
            }
            return;
        }
        let slot = self.slot(value.id, value.field, value.strings);
        self.next_close = self.next_close.min(close);
        self.levels[l].window(start).add(slot, value.ts, value.v, self.sketch.as_ref());
    }

    /// The slot of a (series, field): the guess `next_slot` when it holds the pair, else the map's,
    /// else a new one.
    fn slot(&mut self, id: u64, field: u32, strings: &dyn Fn(&mut Interner) -> Box<[u32]>) -> u32 {
        let slot = if self.slots.get(self.next_slot).is_some_and(|s| s.series == id && s.field == field) {
            debug_assert_eq!(self.slot_of.get(&(id, field)), Some(&(self.next_slot as u32)));
            self.next_slot as u32
        } else {
            match self.slot_of.get(&(id, field)) {
                Some(&slot) => slot,
                None => self.take_slot(id, field, strings),
            }
        };
        self.next_slot = slot as usize + 1;
        slot
    }

    /// A slot for a (series, field) seen for the first time.
    fn take_slot(&mut self, id: u64, field: u32, strings: &dyn Fn(&mut Interner) -> Box<[u32]>) -> u32 {
        let record = match self.series.get(&id) {
            Some(&r) => r,
            None => {
                let series = Series { strings: strings(&mut self.strings), slots: 0 };
                let r = reuse(&mut self.records, &mut self.free_records, series);
                self.series.insert(id, r);
                r
            }
        };
        self.records[record as usize].slots += 1;
        let slot = reuse(&mut self.slots, &mut self.free, Slot { series: id, field, record });
        self.slot_of.insert((id, field), slot);
        slot
    }

    fn close(&mut self, watermark: i64, out: &mut dyn FnMut(Rollup)) {
        if watermark >= self.next_close {
            self.emit(watermark, out);
        }
        if watermark != i64::MAX {
            self.emitted_through = self.emitted_through.max(watermark);
        }
    }

    /// Closes the windows closing at or before `watermark`, finest first (each feeding its coarser
    /// levels), and passes those not emitted before to `out`.
    fn emit(&mut self, watermark: i64, out: &mut dyn FnMut(Rollup)) {
        for i in 0..self.order.len() {
            let l = self.order[i];
            loop {
                let level = &self.levels[l];
                let Some(w) = level.open.front() else { break };
                let close = w.start.saturating_add(level.resolution).saturating_add(self.lateness);
                if close > watermark {
                    break;
                }
                let w = self.levels[l].open.pop_front().expect("a front window");
                self.finish(l, w, close > self.resumed_through, out);
            }
        }
        self.next_close = self
            .levels
            .iter()
            .filter_map(|level| {
                level.open.front().map(|w| w.start.saturating_add(level.resolution).saturating_add(self.lateness))
            })
            .min()
            .unwrap_or(i64::MAX);
        self.free_idle_slots();
    }

    /// A closed window: merged into the coarser levels built from it, and emitted unless it was before.
    fn finish(&mut self, l: usize, mut w: Window, emit: bool, out: &mut dyn FnMut(Rollup)) {
        let runs = Runs::of(&std::mem::take(&mut w.added), self.slots.len());
        for i in 0..self.levels[l].children.len() {
            let child = self.levels[l].children[i];
            let level = &mut self.levels[child];
            level.window(level.start(w.start)).merge(&w, &runs, self.sketch.as_ref());
        }
        if !emit {
            return;
        }
        let resolution = Duration::from_nanos(self.levels[l].resolution as u64);
        let sketch_config = self.sketch.map(|c| c.ddsketch_config());
        let mut key: Option<(u64, Arc<SeriesKey>)> = None;
        for (c, chunk) in w.chunks.iter().enumerate() {
            let Some(chunk) = chunk else { continue };
            for (i, a) in chunk.iter().enumerate().filter(|(_, a)| a.count > 0) {
                let slot = c * CHUNK + i;
                let sketch = sketch_config.map_or_else(String::new, |config| {
                    let held = w.quantiles.get_mut(slot).map(std::mem::take).unwrap_or_default();
                    held.finish(runs.get(slot), &config)
                });
                let Slot { series, field, record } = self.slots[slot];
                let series_key = match &key {
                    Some((id, k)) if *id == series => Arc::clone(k),
                    _ => {
                        let k = Arc::new(self.strings.series_key(&self.records[record as usize].strings));
                        key = Some((series, Arc::clone(&k)));
                        k
                    }
                };
                out(Rollup {
                    series_id: series,
                    series: series_key,
                    field: Arc::clone(&self.fields.names[field as usize]),
                    resolution,
                    window_start: w.start,
                    aggregate: *a,
                    sketch,
                });
            }
        }
    }

    /// Frees the slots no open window holds anything for, the strings of series left without a slot,
    /// and, once most of the string table is unused (churning tag values), compacts it.
    fn free_idle_slots(&mut self) {
        let mut live = vec![false; self.slots.len()];
        for level in &self.levels {
            for w in &level.open {
                w.mark(&mut live);
            }
        }
        for (slot, live) in live.into_iter().enumerate() {
            let Slot { series, field, record } = self.slots[slot];
            if live || field == Slot::FREE {
                continue;
            }
            self.slot_of.remove(&(series, field));
            self.slots[slot].field = Slot::FREE;
            self.free.push(slot as u32);
            let s = &mut self.records[record as usize];
            s.slots -= 1;
            if s.slots == 0 {
                s.strings = Box::default();
                self.series.remove(&series);
                self.free_records.push(record);
            }
        }
        let used: usize = self.records.iter().map(|s| s.strings.len()).sum();
        if self.strings.names.len() > 4096 + 2 * used {
            self.strings = self.strings.compact(self.records.iter_mut().map(|s| &mut s.strings));
        }
    }
}

/// Puts `item` in a free place of `items` if there is one, else at the end; returns its index.
fn reuse<T>(items: &mut Vec<T>, free: &mut Vec<u32>, item: T) -> u32 {
    match free.pop() {
        Some(i) => {
            items[i as usize] = item;
            i
        }
        None => {
            items.push(item);
            (items.len() - 1) as u32
        }
    }
}

/// Distinct strings, numbered in order of first sight.
#[derive(Debug, Default)]
struct Interner {
    numbers: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&n) = self.numbers.get(s) {
            return n;
        }
        let n = self.names.len() as u32;
        let s: Arc<str> = Arc::from(s);
        self.names.push(Arc::clone(&s));
        self.numbers.insert(s, n);
        n
    }

    /// The key of a series held as `[database, measurement, tag key, tag value, ...]` numbers.
    fn series_key(&self, numbers: &[u32]) -> SeriesKey {
        let name = |n: u32| &*self.names[n as usize];
        let tags = numbers[2..].chunks_exact(2).map(|kv| (name(kv[0]), name(kv[1])));
        SeriesKey::from_sorted_tags(name(numbers[0]), name(numbers[1]), tags)
    }

    /// A table of only the strings `series` use, renumbering them.
    fn compact<'a>(&self, series: impl Iterator<Item = &'a mut Box<[u32]>>) -> Interner {
        let mut kept = Interner::default();
        for numbers in series {
            for n in numbers.iter_mut() {
                *n = kept.intern(&self.names[*n as usize]);
            }
        }
        kept
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
        configs(0)
    }

    /// 1m and 5m (5m built from 1m); 1m, 90s and 5m (90s fed points directly); 20s and 1m with a
    /// lateness longer than 20 s (several 20 s windows open at once).
    fn configs(i: usize) -> WindowConfig {
        let (resolutions, lateness): (&[u64], u64) =
            [(&[60, 300][..], 10), (&[60, 90, 300][..], 10), (&[20, 60][..], 30)][i];
        WindowConfig {
            resolutions: resolutions.iter().map(|&s| Duration::from_secs(s)).collect(),
            allowed_lateness: Duration::from_secs(lateness),
            sketch: None,
            ..WindowConfig::default()
        }
    }

    #[test]
    fn a_level_remembers_its_last_window_without_mistaking_the_next() {
        let mut level = Level::new(60 * S);
        for ts in [
            0,
            59 * S,
            60 * S,
            59 * S,
            -1,
            -60 * S,
            -60 * S - 1,
            0,
            3_600 * S + 5,
            i64::MAX - 1,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
        ] {
            assert_eq!(level.start_of(ts), level.start(ts), "at {ts}");
        }
    }

    fn advance(w: &mut Windows) -> Vec<Rollup> {
        let mut out = Vec::new();
        w.advance(&mut |r| out.push(r));
        out
    }

    fn flush(w: &mut Windows) -> Vec<Rollup> {
        let mut out = Vec::new();
        w.flush(&mut |r| out.push(r));
        out
    }

    fn point(host: &str, ts: i64, v: f64) -> Point {
        let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), host.into())]));
        Point::new(
            key,
            vec![("usage".into(), FieldValue::Float(v)), ("note".into(), FieldValue::String("x".into()))],
            ts,
        )
    }

    /// A window of one (series, field): (host, field, resolution s, start).
    type Key = (String, String, u64, i64);

    fn key(r: &Rollup) -> Key {
        (r.series.tag("host").unwrap().to_string(), r.field.to_string(), r.resolution.as_secs(), r.window_start)
    }

    /// The windows of each resolution a point (of the field `usage`) falls in.
    fn windows_of<'a>(p: &'a Point, config: &'a WindowConfig) -> impl Iterator<Item = Key> + 'a {
        config.resolutions.iter().map(|res| {
            let r = res.as_nanos() as i64;
            (
                p.series.tag("host").unwrap().to_string(),
                "usage".to_string(),
                res.as_secs(),
                p.timestamp.div_euclid(r) * r,
            )
        })
    }

    /// (host, field, resolution s, start) -> (count, sum, min, max, first, last)
    type Table = BTreeMap<Key, (u64, f64, f64, f64, (i64, f64), (i64, f64))>;

    fn table(rollups: &[Rollup]) -> Table {
        let mut t = Table::new();
        for r in rollups {
            let a = &r.aggregate;
            let key = key(r);
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
            let v = p.fields[0].1.as_f64().unwrap();
            for key in windows_of(p, config) {
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

    /// (host, field, resolution s, start) -> the sketch's count, min, max and quantiles at a few q.
    type Sketches = BTreeMap<Key, (usize, Vec<f64>)>;

    const QS: [f64; 7] = [0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0];

    fn summary(s: &sketches_ddsketch::DDSketch) -> (usize, Vec<f64>) {
        let mut v = vec![s.min().unwrap(), s.max().unwrap()];
        v.extend(QS.iter().map(|&q| s.quantile(q).unwrap().unwrap()));
        (s.count(), v)
    }

    fn sketches(rollups: &[Rollup]) -> Sketches {
        rollups.iter().map(|r| (key(r), summary(&yaffle_store::sketch::decode(&r.sketch).unwrap()))).collect()
    }

    /// Each window's sketch built from its points' values.
    fn batch_sketches(points: &[Point], config: &WindowConfig) -> Sketches {
        let sketch = config.sketch.expect("sketches are on");
        let mut all: BTreeMap<_, sketches_ddsketch::DDSketch> = BTreeMap::new();
        for p in points {
            for key in windows_of(p, config) {
                all.entry(key).or_insert_with(|| sketch.new_sketch()).add(p.fields[0].1.as_f64().unwrap());
            }
        }
        all.into_iter().map(|(k, s)| (k, summary(&s))).collect()
    }

    #[test]
    fn windows_of_many_values_sketch_them_all() {
        // A point every 100 ms, some late: 600 a minute, past what a window holds unsketched.
        let c = WindowConfig { sketch: Some(SketchConfig::default()), ..config() };
        let points: Vec<Point> =
            (0..4000i64).map(|i| point("a", (i - i % 7 * 10) * S / 10, ((i * 37) % 1000) as f64 * 0.5)).collect();
        let mut w = Windows::new(&c);
        let mut out = Vec::new();
        for p in &points {
            w.add(p);
            out.extend(advance(&mut w));
        }
        out.extend(flush(&mut w));
        assert!(w.take_late().is_empty());
        let got = sketches(&out);
        assert!(got.values().any(|(n, _)| *n == 600) && got.values().any(|(n, _)| *n > 2000));
        assert_eq!(got, batch_sketches(&points, &c));
    }

    #[test]
    fn values_no_sketch_can_hold_are_counted_but_not_sketched() {
        // A staleness marker (NaN) or an infinity reaches the engine by remote_write.
        let c = WindowConfig { sketch: Some(SketchConfig::default()), ..config() };
        let mut w = Windows::new(&c);
        for (i, v) in [1.0, f64::NAN, f64::INFINITY, 2.0, f64::NEG_INFINITY].into_iter().enumerate() {
            w.add(&point("a", (5 + i as i64) * S, v));
            w.add(&point("stale", (5 + i as i64) * S, f64::NAN));
        }
        let out: Vec<Rollup> = flush(&mut w).into_iter().filter(|r| &*r.field == "usage").collect();
        assert_eq!(out.len(), 4, "1m and 5m of each series: {out:?}");
        for r in &out {
            assert_eq!(r.aggregate.count, 5);
            if r.series.tag("host") == Some("stale") {
                assert_eq!(r.sketch, "", "no value to sketch");
            } else {
                let sketch = yaffle_store::sketch::decode(&r.sketch).unwrap();
                assert_eq!((sketch.count(), sketch.min(), sketch.max()), (2, Some(1.0), Some(2.0)));
            }
        }
    }

    #[test]
    fn a_window_is_emitted_once_the_watermark_passes_its_end_plus_lateness() {
        let mut w = Windows::new(&config());
        w.add(&point("a", 5 * S, 1.0));
        w.add(&point("a", 65 * S, 2.0));
        assert!(advance(&mut w).is_empty(), "1m window [0, 60) closes at 70 s");
        w.add(&point("a", 70 * S, 3.0));
        let out = advance(&mut w);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].window_start, out[0].resolution.as_secs(), out[0].aggregate.count), (0, 60, 1));
        assert!(advance(&mut w).is_empty(), "emitted once");
        assert_eq!(w.emitted_through(), 70 * S);
    }

    /// A point at the end of time used to move the watermark to 2262, making every later point late.
    #[test]
    fn a_point_far_ahead_of_its_ingest_time_is_dropped_and_counted_not_a_watermark() {
        let mut w = Windows::new(&config());
        let ingest = 100 * S;
        let batch = |points: Vec<Point>| yaffle_core::Batch::new(points).encode();
        let far = batch(vec![point("a", i64::MAX, 1.0), point("a", 5 * S, 2.0)]);
        assert_eq!(w.add_batch(&mut BatchReader::new(&far).unwrap(), ingest).unwrap(), 2);
        assert_eq!((w.watermark(), w.take_future()), (5 * S, 1));
        let next = batch(vec![point("a", 70 * S, 3.0)]);
        w.add_batch(&mut BatchReader::new(&next).unwrap(), ingest).unwrap();
        let out = advance(&mut w);
        assert_eq!(out.len(), 1, "the window closes on time: {out:?}");
        assert!(w.take_late().is_empty(), "nothing counted late");
        // Within the bound is fine: two days ahead of ingest.
        let ahead = batch(vec![point("a", ingest + 2 * 86_400 * S, 4.0)]);
        w.add_batch(&mut BatchReader::new(&ahead).unwrap(), ingest).unwrap();
        assert_eq!((w.watermark(), w.take_future()), (ingest + 2 * 86_400 * S, 0));
    }

    #[test]
    fn a_replay_starts_at_the_oldest_window_still_open() {
        let c = WindowConfig::default(); // 1m, 5m, 1h, 30 s lateness
        let hour = 1_767_225_600 * S; // an hour's start
        // 17m45s into the hour: the hour's window is the oldest open one.
        assert_eq!(c.replay_start(hour + (17 * 60 + 45) * S), hour);
        // In the hour's first 30 s the previous hour's window waits out its lateness.
        assert_eq!(c.replay_start(hour + 20 * S), hour - 3600 * S);
        // It closes exactly at its end plus the lateness.
        assert_eq!(c.replay_start(hour + 30 * S), hour);
        // Resolutions that do not nest: the oldest over all of them.
        let c = WindowConfig { resolutions: [20, 90].map(Duration::from_secs).to_vec(), ..configs(0) };
        // At 995 s the 90 s window [900, 990) is open until 1000 s; at 1000 s the 20 s one
        // [980, 1000) is the oldest left.
        assert_eq!(c.replay_start(995 * S), 900 * S);
        assert_eq!(c.replay_start(1000 * S), 980 * S);
    }

    #[test]
    fn a_late_point_is_counted_and_not_folded_into_another_window() {
        let mut w = Windows::new(&config());
        w.add(&point("a", 5 * S, 1.0));
        w.add(&point("a", 71 * S, 2.0));
        assert_eq!(advance(&mut w).len(), 1);
        // [0, 60) of 1m is closed; [0, 300) of 5m is still open and takes it.
        w.add(&point("a", 30 * S, 9.0));
        assert_eq!(w.take_late().get("cpu"), Some(&1));
        let out = table(&flush(&mut w));
        assert_eq!(out[&("a".into(), "usage".into(), 300, 0)].0, 3);
        assert_eq!(out[&("a".into(), "usage".into(), 60, 60 * S)].0, 1);
        assert!(!out.contains_key(&("a".into(), "usage".into(), 60, 0)), "the closed window was emitted before");
    }

    #[test]
    fn strings_of_series_with_nothing_open_are_dropped() {
        let mut w = Windows::new(&config());
        let mut out = Vec::new();
        // A new series every second (churning pods): 20 000 distinct host values.
        for i in 0..20_000i64 {
            w.add(&point(&format!("pod-{i}"), i * S, i as f64));
            out.extend(advance(&mut w));
        }
        assert!(w.strings.names.len() < 6_000, "{} strings held", w.strings.names.len());
        // Keys rebuilt from the (compacted) table are right.
        out.extend(flush(&mut w));
        for r in &out {
            let host = r.series.tag("host").unwrap();
            assert_eq!(format!("pod-{}", r.aggregate.first.1 as i64), host);
            assert_eq!((r.series.database(), r.series.measurement(), r.series_id), ("db", "cpu", r.series.id().0));
        }
        assert_eq!(out.len(), 40_000, "a 1m and a 5m window per series");
    }

    #[test]
    fn a_replay_closes_windows_unemitted_as_it_goes() {
        let c = config();
        let (mut replayed, mut live) = (Windows::new(&c), Windows::new(&c));
        let mut emitted = Vec::new();
        // Two hours of a point every 10 s: the replay holds at most two 1m, one 5m and one 1h window open.
        for i in 0..720 {
            let p = point("a", i * 10 * S, i as f64);
            replayed.add(&p);
            replayed.rebuild();
            let open: usize = replayed.levels.iter().map(|l| l.open.len()).sum();
            assert!(open <= 4, "{open} windows open after {i} points");
            live.add(&p);
            emitted.extend(advance(&mut live));
        }
        assert_eq!(replayed.take_late().len(), 0);
        // From here on both emit the same windows.
        for i in 720..800 {
            let p = point("a", i * 10 * S, i as f64);
            replayed.add(&p);
            live.add(&p);
            let (a, b) = (table(&advance(&mut replayed)), table(&advance(&mut live)));
            assert_eq!(a, b);
        }
        assert_eq!(table(&flush(&mut replayed)), table(&flush(&mut live)));
        assert!(!emitted.is_empty());
    }

    /// Points of a few series, each at most `disorder` seconds behind the newest so far.
    fn points_strategy() -> impl Strategy<Value = Vec<Point>> {
        // Integer values: a coarse window's sum is its finer windows' sums, exact only for these.
        prop::collection::vec((0..4usize, 0..8i64, -1000..1000i32), 1..400).prop_map(|raw| {
            let mut t = 1_700_000_000 * S;
            raw.into_iter()
                .map(|(host, back, v)| {
                    t += 3 * S;
                    point(&format!("h{host}"), t - back * S, f64::from(v))
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Streamed in any chunking, the rollups equal a batch recomputation over the points.
        #[test]
        fn streamed_rollups_equal_a_batch_recomputation(
            points in points_strategy(), chunk in 1..50usize, c in 0..3usize, sketch: bool,
        ) {
            let c = WindowConfig { sketch: sketch.then(SketchConfig::default), ..configs(c) };
            let mut w = Windows::new(&c);
            let mut out = Vec::new();
            for part in points.chunks(chunk) {
                for p in part {
                    w.add(p);
                }
                out.extend(advance(&mut w));
            }
            out.extend(flush(&mut w));
            prop_assert!(w.take_late().is_empty());
            prop_assert_eq!(table(&out), batch(&points, &c));
            if sketch {
                prop_assert_eq!(sketches(&out), batch_sketches(&points, &c));
            }
        }

        /// A worker that stops anywhere and a new one that resumes from the emitted watermark, replaying
        /// from `replay_start` (less the points' disorder), together emit every window exactly once, as
        /// one run would.
        #[test]
        fn resuming_from_the_emitted_watermark_neither_loses_nor_repeats_a_window(
            points in points_strategy(), stop_at in 0..400usize, c in 0..3usize, sketch: bool,
        ) {
            let c = WindowConfig { sketch: sketch.then(SketchConfig::default), ..configs(c) };
            let stop_at = stop_at.min(points.len());
            let mut first = Windows::new(&c);
            let mut out = Vec::new();
            for p in &points[..stop_at] {
                first.add(p);
                out.extend(advance(&mut first));
            }
            let emitted = first.emitted_through();
            // Seek by time: the first point read at or after the replay start less the disorder.
            let from = c.replay_start(emitted).saturating_sub(8 * S);
            let start = points.iter().position(|p| p.timestamp >= from).unwrap_or(points.len()).min(stop_at);
            let mut second = Windows::new(&c);
            second.resume(emitted);
            for p in &points[start..] {
                second.add(p);
                out.extend(advance(&mut second));
            }
            out.extend(flush(&mut second));
            prop_assert_eq!(table(&out), batch(&points, &c));
            if sketch {
                prop_assert_eq!(sketches(&out), batch_sketches(&points, &c));
            }
        }
    }
}
