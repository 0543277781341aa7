//! Files of the embedded store and the commit protocol described in the module above.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use yaffle_core::Point;

use crate::StoreError;
use crate::schema::{POINTS_TABLE, points_to_batch};

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
        fs::create_dir_all(root.join(POINTS_TABLE)).map_err(StoreError::io(&root))?;
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
        let mut by_partition: BTreeMap<i64, Vec<Point>> = BTreeMap::new();
        for p in points {
            by_partition
                .entry(p.timestamp.div_euclid(self.partition_ns) * self.partition_ns)
                .or_default()
                .push(p.clone());
        }
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || write_and_commit(&root, by_partition, position))
            .await
            .expect("store write task panicked")?;
        *committed = position;
        Ok(())
    }

    pub(super) async fn drop_partitions_before(&self, table: &str, cutoff_ns: i64) -> Result<usize, StoreError> {
        // Hold the write lock so a write does not land in a partition being removed.
        let _guard = self.committed.lock().await;
        let dir = self.table_dir(table);
        let partition_ns = self.partition_ns;
        tokio::task::spawn_blocking(move || {
            let mut dropped = 0;
            for entry in fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
                let entry = entry.map_err(StoreError::io(&dir))?;
                let name = entry.file_name();
                let Some(start) = name.to_str().and_then(partition_start) else { continue };
                if start.saturating_add(partition_ns) <= cutoff_ns {
                    fs::remove_dir_all(entry.path()).map_err(StoreError::io(entry.path()))?;
                    tracing::info!(partition = ?name, "dropped partition past retention");
                    dropped += 1;
                }
            }
            Ok(dropped)
        })
        .await
        .expect("retention task panicked")
    }
}

fn write_and_commit(root: &Path, by_partition: BTreeMap<i64, Vec<Point>>, position: u64) -> Result<(), StoreError> {
    let mut files = Vec::with_capacity(by_partition.len());
    for (start, points) in &by_partition {
        let dir = root.join(POINTS_TABLE).join(partition_name(*start));
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let final_path = dir.join(format!("part-{position:020}.parquet"));
        write_parquet(&tmp_path(&final_path), points)?;
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

fn write_parquet(path: &Path, points: &[Point]) -> Result<(), StoreError> {
    let batch = points_to_batch(points).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let file = File::create(path).map_err(StoreError::io(path))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| StoreError::Encoding(e.to_string()))?;
    writer.write(&batch).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let file = writer.into_inner().map_err(|e| StoreError::Encoding(e.to_string()))?;
    file.sync_all().map_err(StoreError::io(path))
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(StoreError::io(&tmp))?;
    f.write_all(bytes).map_err(StoreError::io(&tmp))?;
    f.sync_all().map_err(StoreError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(StoreError::io(path))?;
    sync_dir(path.parent().expect("file has a parent"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io(dir))
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
    fn partition_names_round_trip() {
        let start = 1_763_769_600_000_000_000; // 2025-11-22T00:00:00Z
        assert_eq!(partition_name(start), "20251122T000000Z");
        assert_eq!(partition_start("20251122T000000Z"), Some(start));
        assert_eq!(partition_start("junk"), None);
    }
}
