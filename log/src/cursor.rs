//! Named cursors: each sink's persisted read position.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::CursorConfig;
use crate::durable::write_atomically;

/// The sinks that read the log, each through its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CursorName {
    /// The store sink.
    Store,
    /// The Kafka sink.
    Kafka,
    /// The alert sink.
    Alert,
    /// Standalone downsampling (without Kafka, the log is its source; it holds back its replay window).
    Downsample,
}

impl CursorName {
    /// All cursors, in a fixed order.
    pub const ALL: [CursorName; 4] = [CursorName::Store, CursorName::Kafka, CursorName::Alert, CursorName::Downsample];

    /// The cursor's name in files, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CursorName::Store => "store",
            CursorName::Kafka => "kafka",
            CursorName::Alert => "alert",
            CursorName::Downsample => "downsample",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CursorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub(crate) struct CursorState {
    pub(crate) name: CursorName,
    pub(crate) config: CursorConfig,
    /// Last committed position (persisted).
    pub(crate) committed: AtomicU64,
    /// Positions below this were dropped for this cursor by the `drop_oldest` policy.
    pub(crate) floor: AtomicU64,
    /// What the reader recorded with its last commit (standalone downsampling: its emitted watermark).
    pub(crate) metadata: Mutex<String>,
    file: PathBuf,
    /// Serialises [`CursorState::persist`]: its temporary file is per cursor, and several tasks may
    /// commit one cursor (the ClickHouse sink's shards do).
    persisting: Mutex<()>,
}

impl CursorState {
    /// Loads the persisted position, or starts at `start` for a cursor never committed.
    pub(crate) fn load(dir: &Path, name: CursorName, config: CursorConfig, start: u64) -> std::io::Result<Self> {
        let file = dir.join(format!("{}.cursor", name.as_str()));
        let (committed, metadata) = match fs::read_to_string(&file) {
            Ok(s) => {
                let (position, metadata) = s.split_once('\n').unwrap_or((&s, ""));
                let position = position.trim().parse().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: not a position: {position:?}", file.display()),
                    )
                })?;
                (position, metadata.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (start, String::new()),
            Err(e) => return Err(e),
        };
        Ok(Self {
            name,
            config,
            committed: AtomicU64::new(committed),
            floor: AtomicU64::new(0),
            metadata: Mutex::new(metadata),
            file,
            persisting: Mutex::new(()),
        })
    }

    /// The position below which this cursor needs nothing.
    pub(crate) fn effective(&self) -> u64 {
        self.committed.load(Ordering::Acquire).max(self.floor.load(Ordering::Acquire))
    }

    /// Persists a position (atomically: write, fsync, rename, fsync the directory), with `metadata` if given (else the
    /// last one). Cursors never move back: an older position than the committed one leaves it as it
    /// is. Safe to call from several threads.
    pub(crate) fn persist(&self, position: u64, metadata: Option<&str>) -> std::io::Result<()> {
        let _one_at_a_time = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        let position = position.max(self.committed.load(Ordering::Acquire));
        let mut kept = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = metadata {
            m.clone_into(&mut kept);
        }
        let mut text = position.to_string();
        if !kept.is_empty() {
            text.push('\n');
            text.push_str(&kept);
        }
        write_atomically(&self.file, text.as_bytes())?;
        self.committed.fetch_max(position, Ordering::AcqRel);
        Ok(())
    }
}
