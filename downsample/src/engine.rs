//! The state one worker keeps: open windows per owned partition, and the rollup rows waiting to be
//! written. The Kafka worker, standalone mode and backfill all drive it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use yaffle_core::batch::{BatchReader, DecodeError};
use yaffle_store::{RollupRow, Store, StoreError};

use crate::metrics::{MeasurementLabels, Metrics};
use crate::windows::{Rollup, WindowConfig, Windows};

/// Most measurements named in `yaffle_downsample_late_points_total`; later ones count as [`OTHER_MEASUREMENTS`].
pub const MAX_MEASUREMENT_LABELS: usize = 100;
/// The `measurement` label of late values past [`MAX_MEASUREMENT_LABELS`].
pub const OTHER_MEASUREMENTS: &str = "_other";

/// Open windows per partition and the finished rows not yet written.
#[derive(Debug)]
pub struct Engine {
    config: WindowConfig,
    partitions: HashMap<i32, Windows>,
    pending: Vec<RollupRow>,
    metrics: Arc<Metrics>,
    /// Measurements named in the late-values metric so far.
    late_labels: HashSet<Arc<str>>,
}

impl Engine {
    /// No partition owned.
    pub fn new(config: WindowConfig, metrics: Arc<Metrics>) -> Self {
        Self { config, partitions: HashMap::new(), pending: Vec::new(), metrics, late_labels: HashSet::new() }
    }

    /// Takes a partition with empty windows; those closing at or before `emitted_through` (what the
    /// previous owner recorded with its commit) are rebuilt by the replay but not emitted again.
    pub fn assign(&mut self, partition: i32, emitted_through: Option<i64>) {
        let mut windows = Windows::new(&self.config);
        if let Some(t) = emitted_through {
            windows.resume(t);
        }
        self.partitions.insert(partition, windows);
        self.metrics.partitions.set(self.partitions.len() as i64);
    }

    /// Drops a partition's windows (its rows already finished stay pending: they are complete).
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.metrics.partitions.set(self.partitions.len() as i64);
    }

    /// Whether the partition is owned.
    pub fn owns(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Folds one record (a batch) of an owned partition and finishes the windows its watermark closes;
    /// while `replaying` records the previous owner read, closes them unemitted: that owner emitted
    /// them (see [`Engine::caught_up`]).
    /// `record_time` is the record's ingest time (ns), which bounds how far ahead its points may be.
    /// Returns the number of points read.
    pub fn add(
        &mut self,
        partition: i32,
        payload: &[u8],
        record_time: i64,
        replaying: bool,
    ) -> Result<usize, DecodeError> {
        let mut batch = BatchReader::new(payload)?;
        let Some(windows) = self.partitions.get_mut(&partition) else { return Ok(0) };
        let read = windows.add_batch(&mut batch, record_time);
        if replaying {
            windows.rebuild();
        } else {
            windows.advance(&mut |r| self.pending.push(row(r)));
        }
        let n = read?;
        self.metrics.points.inc_by(n as u64);
        Ok(n)
    }

    /// The replay reached the previous owner's commit. Every window its watermark had closed there was
    /// emitted (that owner commits only after writing them) and [`Engine::add`] has closed them
    /// unemitted; the values the replay found late were counted by that owner already, so they are
    /// dropped here.
    pub fn caught_up(&mut self, partition: i32) {
        if let Some(windows) = self.partitions.get_mut(&partition) {
            tracing::debug!(
                partition,
                watermark = windows.watermark(),
                "windows through the watermark count as emitted"
            );
            windows.take_late();
        }
    }

    /// Finishes every open window of every partition (the end of a bounded backfill).
    pub fn flush(&mut self) {
        for windows in self.partitions.values_mut() {
            windows.flush(&mut |r| self.pending.push(row(r)));
        }
    }

    /// The watermark through which a partition's windows are finished (what a commit records).
    pub fn emitted_through(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).map(Windows::emitted_through).filter(|&t| t != i64::MIN)
    }

    /// The rows waiting to be written.
    pub fn pending(&self) -> &[RollupRow] {
        &self.pending
    }

    /// Writes the pending rows to `store` and forgets them; on failure keeps them for the next try.
    /// Returns how many were written.
    pub async fn write_pending(&mut self, store: &dyn Store) -> Result<usize, StoreError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        if let Err(e) = store.write_rollups(&self.pending).await {
            self.metrics.write_errors.inc();
            return Err(e);
        }
        let n = self.pending.len();
        let through = self.pending.iter().map(|r| r.window_start_ns).max();
        tracing::debug!(rows = n, ?through, "rollups written");
        self.metrics.rollups_written.inc_by(n as u64);
        self.pending.clear();
        // A window close's burst of rows need not pin its memory until the next one.
        self.pending.shrink_to(1024);
        self.update_gauges();
        Ok(n)
    }

    /// Keeps only the pending rows `keep` accepts (a backfill keeps whole windows of its range).
    pub fn retain_pending(&mut self, keep: impl FnMut(&RollupRow) -> bool) {
        self.pending.retain(keep);
        self.pending.shrink_to(1024);
    }

    /// Counts late values per measurement in `/metrics` (the first [`MAX_MEASUREMENT_LABELS`]
    /// measurements by name, the others as `measurement="_other"`: label values from user data must
    /// not grow `/metrics` without bound) and points too far ahead, and logs them.
    pub fn report_late(&mut self) {
        for windows in self.partitions.values_mut() {
            for (measurement, n) in windows.take_late() {
                tracing::warn!(%measurement, values = n, "late values dropped: their window had closed");
                let labelled =
                    self.late_labels.contains(&measurement) || self.late_labels.len() < MAX_MEASUREMENT_LABELS;
                let label = if labelled {
                    self.late_labels.insert(Arc::clone(&measurement));
                    measurement.to_string()
                } else {
                    OTHER_MEASUREMENTS.to_string()
                };
                self.metrics.late_points.get_or_create(&MeasurementLabels { measurement: label }).inc_by(n);
            }
            let future = windows.take_future();
            if future > 0 {
                tracing::warn!(
                    points = future,
                    "points dropped: too far ahead of their ingest time (downsample.max_future)"
                );
                self.metrics.future_points.inc_by(future);
            }
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let open: usize = self.partitions.values().map(Windows::open_series_fields).sum();
        self.metrics.open_series_fields.set(open as i64);
        self.metrics.pending_rollups.set(self.pending.len() as i64);
        if let Some(w) = self.partitions.values().map(Windows::watermark).max().filter(|&w| w != i64::MIN) {
            self.metrics.watermark_seconds.set(w as f64 / 1e9);
        }
    }
}

/// A finished window as a store row. Its version is its count: a window rebuilt from more of the log
/// replaces one built from less, and one rebuilt from the same points is the same row.
pub fn row(r: Rollup) -> RollupRow {
    RollupRow {
        series_id: yaffle_core::SeriesId(r.series_id),
        series: r.series,
        field: r.field,
        resolution_s: r.resolution.as_secs() as u32,
        window_start_ns: r.window_start,
        aggregate: r.aggregate,
        sketch: r.sketch,
        version: r.aggregate.count,
    }
}
