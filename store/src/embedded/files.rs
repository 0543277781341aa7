//! Files of the embedded store and the commit protocol described in the module above.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use chrono::{DateTime, NaiveDateTime};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use yaffle_core::Point;

use crate::rollups::{ROLLUPS_TABLE, RollupRow, rollups_to_batch};
use crate::schema::{POINTS_TABLE, points_to_batch};
use crate::{Retention, StoreError};

const COMMIT_FILE: &str = "_commit.json";
const PARTITION_FORMAT: &str = "%Y%m%dT%H%M%SZ";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Commit {
    position: u64,
    /// Files of the last write, relative to the store root.
    files: Vec<PathBuf>,
}

#[derive(Debug)]
pub(super) struct Files {
    root: Arc<PathBuf>,
    partition_ns: i64,
    /// The committed position; the lock also serialises writes.
    committed: Mutex<u64>,
}

impl Files {
    /// Opens the store directory and completes or rolls back an interrupted write.
    pub(super) fn open(root: PathBuf, partition_ns: i64) -> Result<Self, StoreError> {
        for table in [POINTS_TABLE, ROLLUPS_TABLE] {
            fs::create_dir_all(root.join(table)).map_err(StoreError::io(&root))?;
        }
        let commit_path = root.join(COMMIT_FILE);
        let commit: Commit = match fs::read(&commit_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt { path: commit_path.display().to_string(), reason: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Commit::default(),
            Err(e) => return Err(StoreError::io(&commit_path)(e)),
        };
        for file in &commit.files {
            let final_path = root.join(file);
            let tmp = tmp_path(&final_path);
            if tmp.exists() {
                fs::rename(&tmp, &final_path).map_err(StoreError::io(&tmp))?;
                tracing::info!(file = %final_path.display(), "completed a committed store write");
            }
        }
        remove_tmp_files(&root.join(POINTS_TABLE))?;
        remove_tmp_files(&root.join(ROLLUPS_TABLE))?;
        Ok(Self { root: Arc::new(root), partition_ns, committed: Mutex::new(commit.position) })
    }

    /// A handle for reading only: no recovery, position unknown (0).
    pub(super) fn read_only(root: PathBuf, partition_ns: i64) -> Self {
        Self { root: Arc::new(root), partition_ns, committed: Mutex::new(0) }
    }

    pub(super) fn table_dir(&self, table: &str) -> PathBuf {
        self.root.join(table)
    }

    pub(super) async fn committed_position(&self) -> u64 {
        *self.committed.lock().await
    }

    pub(super) async fn write_points(&self, points: &[Point], position: u64) -> Result<(), StoreError> {
        let mut committed = self.committed.lock().await;
        if position <= *committed {
            return Ok(());
        }
        let by_partition = self.by_partition(points);
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || write_and_commit(&root, by_partition, position))
            .await
            .expect("store write task panicked")?;
        *committed = position;
        Ok(())
    }

    /// Drops the partitions past retention: of `points`, and of `rollups` per resolution.
    pub(super) async fn enforce_retention(&self, retention: &Retention, now_ns: i64) -> Result<usize, StoreError> {
        // Hold the write lock so a write does not land in a partition being removed.
        let _guard = self.committed.lock().await;
        let (root, partition_ns, retention) = (Arc::clone(&self.root), self.partition_ns, retention.clone());
        tokio::task::spawn_blocking(move || {
            let cutoff = |keep: std::time::Duration| now_ns.saturating_sub(keep.as_nanos() as i64);
            let mut dropped = 0;
            if let Some(keep) = retention.points {
                dropped += drop_partitions_before(&root.join(POINTS_TABLE), partition_ns, cutoff(keep))?;
            }
            for (dir, resolution_s) in resolution_dirs(&root.join(ROLLUPS_TABLE))? {
                if let Some(keep) = retention.rollups_of(std::time::Duration::from_secs(resolution_s.into())) {
                    dropped += drop_partitions_before(&dir, partition_ns, cutoff(keep))?;
                }
            }
            Ok(dropped)
        })
        .await
        .expect("retention task panicked")
    }

    /// Writes rollup rows: one new file per (resolution, partition) they touch.
    pub(super) async fn write_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError> {
        let mut groups: BTreeMap<(u32, i64), Vec<RollupRow>> = BTreeMap::new();
        for r in rows {
            groups.entry((r.resolution_s, self.partition_of(r.window_start_ns))).or_default().push(r.clone());
        }
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || {
            for ((resolution_s, start), rows) in groups {
                let dir = root.join(ROLLUPS_TABLE).join(format!("{resolution_s}s")).join(partition_name(start));
                let batch = rollups_to_batch(&rows).map_err(|e| StoreError::Encoding(e.to_string()))?;
                write_new_file(&dir, &batch)?;
            }
            Ok(())
        })
        .await
        .expect("rollup write task panicked")
    }

    /// Appends points outside the log's stream: one new file per partition.
    pub(super) async fn append_points(&self, points: &[Point]) -> Result<u64, StoreError> {
        let _guard = self.committed.lock().await;
        let by_partition = self.by_partition(points);
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || {
            for (start, points) in &by_partition {
                let batch = points_to_batch(points).map_err(|e| StoreError::Encoding(e.to_string()))?;
                write_new_file(&root.join(POINTS_TABLE).join(partition_name(*start)), &batch)?;
            }
            Ok(by_partition.values().map(|p| p.len() as u64).sum())
        })
        .await
        .expect("append task panicked")
    }

    /// Deletes the points with `from_ns <= time < to_ns`: removes the partitions inside the range and
    /// rewrites the files of those it cuts (each replaced atomically).
    pub(super) async fn delete_points(&self, from_ns: i64, to_ns: i64) -> Result<(), StoreError> {
        let _guard = self.committed.lock().await;
        let (dir, partition_ns) = (self.table_dir(POINTS_TABLE), self.partition_ns);
        tokio::task::spawn_blocking(move || {
            for entry in fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
                let path = entry.map_err(StoreError::io(&dir))?.path();
                let Some(start) = path.file_name().and_then(|n| n.to_str()).and_then(partition_start) else {
                    continue;
                };
                let end = start.saturating_add(partition_ns);
                if end <= from_ns || start >= to_ns {
                    continue;
                }
                if from_ns <= start && end <= to_ns {
                    fs::remove_dir_all(&path).map_err(StoreError::io(&path))?;
                    continue;
                }
                for file in fs::read_dir(&path).map_err(StoreError::io(&path))? {
                    let file = file.map_err(StoreError::io(&path))?.path();
                    if file.extension().is_some_and(|e| e == "parquet") {
                        remove_rows_in(&file, from_ns, to_ns)?;
                    }
                }
            }
            sync_dir(&dir)
        })
        .await
        .expect("delete task panicked")
    }

    fn by_partition(&self, points: &[Point]) -> BTreeMap<i64, Vec<Point>> {
        let mut by_partition: BTreeMap<i64, Vec<Point>> = BTreeMap::new();
        for p in points {
            by_partition.entry(self.partition_of(p.timestamp)).or_default().push(p.clone());
        }
        by_partition
    }

    /// The start of the partition holding time `ns`.
    fn partition_of(&self, ns: i64) -> i64 {
        partition_of(ns, self.partition_ns)
    }
}

fn write_and_commit(root: &Path, by_partition: BTreeMap<i64, Vec<Point>>, position: u64) -> Result<(), StoreError> {
    let mut files = Vec::with_capacity(by_partition.len());
    for (start, points) in &by_partition {
        let dir = root.join(POINTS_TABLE).join(partition_name(*start));
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let final_path = dir.join(format!("part-{position:020}.parquet"));
        let batch = points_to_batch(points).map_err(|e| StoreError::Encoding(e.to_string()))?;
        write_parquet(&tmp_path(&final_path), &batch)?;
        files.push(final_path.strip_prefix(root).expect("under root").to_path_buf());
    }
    // The commit point.
    let commit = serde_json::to_vec(&Commit { position, files: files.clone() }).expect("commit serializes");
    write_atomically(&root.join(COMMIT_FILE), &commit)?;
    for file in &files {
        let final_path = root.join(file);
        fs::rename(tmp_path(&final_path), &final_path).map_err(StoreError::io(&final_path))?;
    }
    for file in &files {
        sync_dir(root.join(file).parent().expect("partition dir"))?;
    }
    Ok(())
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), StoreError> {
    let file = File::create(path).map_err(StoreError::io(path))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| StoreError::Encoding(e.to_string()))?;
    writer.write(batch).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let file = writer.into_inner().map_err(|e| StoreError::Encoding(e.to_string()))?;
    file.sync_all().map_err(StoreError::io(path))
}

/// Writes `batch` as a new uniquely named file in `dir`, atomically (temporary file, fsync, rename).
fn write_new_file(dir: &Path, batch: &RecordBatch) -> Result<(), StoreError> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let name = format!("part-{now:020}-{}-{}.parquet", std::process::id(), SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    write_parquet(&tmp_path(&path), batch)?;
    fs::rename(tmp_path(&path), &path).map_err(StoreError::io(&path))?;
    sync_dir(dir)
}

/// Rewrites a points file without the rows in `[from_ns, to_ns)`, or removes it when none is left.
fn remove_rows_in(path: &Path, from_ns: i64, to_ns: i64) -> Result<(), StoreError> {
    let encoding = |e: &dyn std::fmt::Display| StoreError::Encoding(format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(StoreError::io(path))?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| encoding(&e))?.build().map_err(|e| encoding(&e))?;
    let mut kept = Vec::new();
    let mut removed = 0;
    for batch in reader {
        let batch = batch.map_err(|e| encoding(&e))?;
        let time = batch.column(0).as_any().downcast_ref::<TimestampNanosecondArray>().expect("time column");
        let keep: BooleanArray = time.iter().map(|t| t.map(|t| t < from_ns || t >= to_ns)).collect();
        removed += keep.false_count();
        kept.push(filter_record_batch(&batch, &keep).map_err(|e| encoding(&e))?);
    }
    if removed == 0 {
        return Ok(());
    }
    let schema = crate::schema::points_schema();
    let batch = arrow::compute::concat_batches(&schema, &kept).map_err(|e| encoding(&e))?;
    if batch.num_rows() == 0 {
        return fs::remove_file(path).map_err(StoreError::io(path));
    }
    write_parquet(&tmp_path(path), &batch)?;
    fs::rename(tmp_path(path), path).map_err(StoreError::io(path))?;
    sync_dir(path.parent().expect("file has a parent"))
}

/// `(dir, resolution in seconds)` of each `rollups/<n>s` directory.
fn resolution_dirs(rollups: &Path) -> Result<Vec<(PathBuf, u32)>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(rollups).map_err(StoreError::io(rollups))? {
        let path = entry.map_err(StoreError::io(rollups))?.path();
        let seconds = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix('s')?.parse().ok());
        if let Some(s) = seconds {
            out.push((path, s));
        }
    }
    Ok(out)
}

fn drop_partitions_before(dir: &Path, partition_ns: i64, cutoff_ns: i64) -> Result<usize, StoreError> {
    let mut dropped = 0;
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        let name = entry.file_name();
        let Some(start) = name.to_str().and_then(partition_start) else { continue };
        if start.saturating_add(partition_ns) <= cutoff_ns {
            fs::remove_dir_all(entry.path()).map_err(StoreError::io(entry.path()))?;
            tracing::info!(dir = %dir.display(), partition = ?name, "dropped partition past retention");
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    yaffle_log::durable::write_atomically(path, bytes).map_err(StoreError::io(path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    yaffle_log::durable::sync_dir(dir).map_err(StoreError::io(dir))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn remove_tmp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = entry.map_err(StoreError::io(dir))?.path();
        if path.is_dir() {
            remove_tmp_files(&path)?;
        } else if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path).map_err(StoreError::io(&path))?;
            tracing::info!(file = %path.display(), "removed an uncommitted store file");
        }
    }
    Ok(())
}

/// The start of the `width`-wide partition holding `ns`. Near `i64::MIN` the start would be before the
/// first representable time: such points go to the first partition that starts after it (which retention
/// drops like any other), where an unchecked multiplication wrapped to a start in 2262 that retention
/// never reached.
fn partition_of(ns: i64, width: i64) -> i64 {
    ns.div_euclid(width).checked_mul(width).unwrap_or_else(|| (i64::MIN / width) * width)
}

pub(super) fn partition_name(start_ns: i64) -> String {
    DateTime::from_timestamp_nanos(start_ns).format(PARTITION_FORMAT).to_string()
}

fn partition_start(name: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(name, PARTITION_FORMAT).ok()?.and_utc().timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_starts_never_overflow() {
        let day = 86_400_000_000_000;
        assert_eq!(partition_of(day + 5, day), day);
        assert_eq!(partition_of(-1, day), -day);
        let first = partition_of(i64::MIN, day);
        assert!(first <= i64::MIN + day && first > i64::MIN, "{first}");
        assert_eq!(partition_start(&partition_name(first)), Some(first));
        assert_eq!(partition_of(i64::MAX, day), i64::MAX.div_euclid(day) * day);
    }

    #[test]
    fn partition_names_round_trip() {
        let start = 1_763_769_600_000_000_000; // 2025-11-22T00:00:00Z
        assert_eq!(partition_name(start), "20251122T000000Z");
        assert_eq!(partition_start("20251122T000000Z"), Some(start));
        assert_eq!(partition_start("junk"), None);
    }
}
