//! A shard's persisted progress.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::IngestError;

/// Where a shard stands in the log, and the range of the block it may have half-inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Progress {
    /// Every row before this log position is in the shard.
    pub(super) position: u64,
    /// `[start, end)` of a block whose insert was attempted but not confirmed.
    pub(super) pending: Option<(u64, u64)>,
}

#[derive(Debug)]
pub(super) struct ProgressFile {
    path: PathBuf,
    pub(super) state: Progress,
}

impl ProgressFile {
    /// Loads shard `shard` of `shards`, or starts at `start`.
    pub(super) fn open(dir: &Path, shard: usize, shards: usize, start: u64) -> Result<Self, IngestError> {
        fs::create_dir_all(dir).map_err(IngestError::io(dir))?;
        let path = dir.join(format!("shard-{}-of-{shards}.json", shard + 1));
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| IngestError::SinkState(format!("{}: not a shard progress file: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress { position: start, pending: None },
            Err(e) => return Err(IngestError::io(&path)(e)),
        };
        Ok(Self { path, state })
    }

    /// Records the range of a block about to be inserted.
    pub(super) fn begin(&mut self, start: u64, end: u64) -> Result<(), IngestError> {
        self.save(Progress { position: self.state.position, pending: Some((start, end)) })
    }

    /// Everything before `position` is in the shard.
    pub(super) fn commit(&mut self, position: u64) -> Result<(), IngestError> {
        self.save(Progress { position: position.max(self.state.position), pending: None })
    }

    fn save(&mut self, state: Progress) -> Result<(), IngestError> {
        super::super::save_json(&self.path, &state)?;
        self.state = state;
        Ok(())
    }
}
