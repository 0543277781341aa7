//! Durable log configuration.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::segment::MAX_RECORD_BYTES;

/// When appended records are flushed to stable storage.
///
/// A `kill -9` of the process loses nothing under any policy: acknowledged records are in the kernel's
/// page cache once `write` returns. The policy only matters when the machine itself crashes or loses
/// power: `always` loses nothing acknowledged, `interval` loses at most the last interval of
/// acknowledged writes, `never` leaves it to the kernel (typically up to 30 seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync once per group commit, before acknowledging (the default).
    #[default]
    Always,
    /// fsync at most this often; acknowledge after `write`.
    Interval(Duration),
    /// Never fsync.
    Never,
}

impl Serialize for FsyncPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FsyncPolicy::Always => s.serialize_str("always"),
            FsyncPolicy::Never => s.serialize_str("never"),
            FsyncPolicy::Interval(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => humantime::parse_duration(other).map(FsyncPolicy::Interval).map_err(|_| {
                serde::de::Error::custom(format!(
                    "fsync must be \"always\", \"never\" or a duration like \"100ms\", got {other:?}"
                ))
            }),
        }
    }
}

/// What happens when a cursor falls further behind than its disk budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse new writes (HTTP 503 with Retry-After) until the sink catches up. Nothing is lost.
    #[default]
    Block,
    /// Skip this sink's oldest whole segments; the other sinks keep them. Counted and logged.
    DropOldest,
}

/// One sink's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CursorConfig {
    /// Whether the sink reads the log. Segments are kept until every enabled cursor has passed them.
    pub enabled: bool,
    /// How far (in log bytes) the cursor may fall behind the end of the log.
    pub disk_budget: ByteSize,
    /// What happens past the budget.
    pub policy: OverflowPolicy,
}

impl Default for CursorConfig {
    fn default() -> Self {
        Self { enabled: false, disk_budget: ByteSize::gib(4), policy: OverflowPolicy::Block }
    }
}

/// The cursors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CursorsConfig {
    /// Store sink.
    pub store: CursorConfig,
    /// Kafka sink.
    pub kafka: CursorConfig,
    /// Alert sink.
    pub alert: CursorConfig,
    /// Standalone downsampling. It stays a replay window behind the end (the longest resolution plus
    /// lateness and margin, about 65 minutes by default), so its budget is larger, and past it the
    /// oldest segments of that window are dropped for it rather than writes refused: a rebuild after
    /// a crash then misses their points, the live rollups do not.
    pub downsample: CursorConfig,
}

impl Default for CursorsConfig {
    fn default() -> Self {
        Self {
            store: CursorConfig { enabled: true, ..CursorConfig::default() },
            kafka: CursorConfig::default(),
            alert: CursorConfig::default(),
            downsample: CursorConfig {
                disk_budget: ByteSize::gib(16),
                policy: OverflowPolicy::DropOldest,
                ..CursorConfig::default()
            },
        }
    }
}

/// The durable log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Directory, relative to the data directory unless absolute.
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: ByteSize,
    /// When appends reach stable storage.
    pub fsync: FsyncPolicy,
    /// The largest record an append accepts (ingest answers 413 past it). At most 1 GiB, the largest any
    /// reader accepts, so whatever was acknowledged reads back.
    pub max_record_bytes: ByteSize,
    /// The sinks' cursors.
    pub cursors: CursorsConfig,
    /// Take over a log directory written before data format 2 (see [`crate::dir`]) instead of
    /// refusing to start. Off by default: the operator decides.
    pub upgrade_from_format_1: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("log"),
            segment_bytes: ByteSize::mib(64),
            fsync: FsyncPolicy::Always,
            max_record_bytes: ByteSize::mib(256),
            cursors: CursorsConfig::default(),
            upgrade_from_format_1: false,
        }
    }
}

impl LogConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes.as_u64() < 4096 {
            return Err(format!("log.segment_bytes must be at least 4 KiB, got {}", self.segment_bytes));
        }
        if self.max_record_bytes.as_u64() == 0 || self.max_record_bytes.as_u64() > MAX_RECORD_BYTES {
            return Err(format!(
                "log.max_record_bytes must be between 1 byte and {}, got {}",
                ByteSize::b(MAX_RECORD_BYTES),
                self.max_record_bytes
            ));
        }
        let c = &self.cursors;
        for (name, c) in [("store", &c.store), ("kafka", &c.kafka), ("alert", &c.alert), ("downsample", &c.downsample)]
        {
            if c.enabled && c.disk_budget.as_u64() < 2 * self.segment_bytes.as_u64() {
                return Err(format!(
                    "log.cursors.{name}.disk_budget ({}) must be at least twice log.segment_bytes ({})",
                    c.disk_budget, self.segment_bytes
                ));
            }
        }
        Ok(())
    }
}
