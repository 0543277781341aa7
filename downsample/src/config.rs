//! `[downsample]`: resolutions, lateness, the sketch, replay and the Kafka consumer.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aggregate::SketchConfig;
use crate::windows::WindowConfig;

/// Everything the workers, standalone downsampling and backfill read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownsampleConfig {
    /// `yaffle standalone` downsamples in-process, on the durable log's `kafka` cursor, unless
    /// `sinks.kafka.enabled` hands the points to Kafka (and its workers) instead.
    pub standalone: bool,
    /// Window lengths, e.g. `["1m", "5m", "1h"]`.
    #[serde(with = "durations")]
    pub resolutions: Vec<Duration>,
    /// How long after a window's end (in event time) its points are still accepted.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Points further than this ahead of their ingest time are dropped and counted
    /// (`yaffle_downsample_future_points_total`), so the watermark never passes ingest time plus this.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Extra log replayed before the open windows' start, for points whose event time is ahead of
    /// their ingest time (agent clocks running fast, buffered batches).
    #[serde(with = "humantime_serde")]
    pub replay_margin: Duration,
    /// How often finished rollups are written and offsets committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Rollups held while the store refuses them; past this the worker stops reading until they land.
    pub max_pending_rows: usize,
    /// `/metrics` of `yaffle downsample`.
    pub bind: SocketAddr,
    /// The quantile sketch kept in each rollup.
    pub sketch: SketchSettings,
    /// The consumer group.
    pub kafka: KafkaSourceConfig,
}

/// The DDSketch in each rollup row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SketchSettings {
    /// Keep a sketch (quantiles from rollups); off saves most of the state's memory.
    pub enabled: bool,
    /// Quantiles from the sketch are within this relative error (0.01 = 1 %).
    pub relative_accuracy: f64,
    /// Bins kept at most per sketch.
    pub max_bins: u32,
}

impl Default for SketchSettings {
    fn default() -> Self {
        let d = SketchConfig::default();
        Self { enabled: true, relative_accuracy: d.relative_accuracy, max_bins: d.max_bins }
    }
}

/// Where the points are read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// The topic ingest's Kafka sink writes.
    pub topic: String,
    /// The consumer group of the workers.
    pub group_id: String,
    /// Longest a fetch waits for data (keep it low: it bounds the latency of a quiet partition).
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// A worker silent this long loses its partitions.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Timeout of offset lookups and commits.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "yaffle-points".into(),
            group_id: "yaffle-downsample".into(),
            fetch_wait_max: Duration::from_millis(10),
            session_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for DownsampleConfig {
    fn default() -> Self {
        let w = WindowConfig::default();
        Self {
            standalone: true,
            resolutions: w.resolutions,
            allowed_lateness: w.allowed_lateness,
            max_future: w.max_future,
            replay_margin: Duration::from_secs(300),
            commit_interval: Duration::from_secs(1),
            max_pending_rows: 1_000_000,
            bind: "127.0.0.1:8092".parse().expect("a socket address"),
            sketch: SketchSettings::default(),
            kafka: KafkaSourceConfig::default(),
        }
    }
}

impl DownsampleConfig {
    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.resolutions.is_empty() || self.resolutions.len() > 32 {
            return Err("downsample.resolutions must list between 1 and 32 durations".into());
        }
        if let Some(r) = self.resolutions.iter().find(|r| r.as_secs() == 0 || r.subsec_nanos() != 0) {
            return Err(format!("downsample.resolutions: {r:?} is not a whole number of seconds"));
        }
        let s = &self.sketch;
        if s.enabled && !(s.relative_accuracy > 0.0 && s.relative_accuracy < 1.0 && s.max_bins > 0) {
            return Err("downsample.sketch.relative_accuracy must be in (0, 1) and max_bins at least 1".into());
        }
        if self.commit_interval.is_zero() || self.max_pending_rows == 0 {
            return Err("downsample.commit_interval and downsample.max_pending_rows must be positive".into());
        }
        if self.kafka.brokers.is_empty() || self.kafka.topic.is_empty() || self.kafka.group_id.is_empty() {
            return Err("downsample.kafka.brokers, topic and group_id must be set".into());
        }
        Ok(())
    }

    /// The windows' settings.
    pub fn windows(&self) -> WindowConfig {
        let s = &self.sketch;
        WindowConfig {
            resolutions: self.resolutions.clone(),
            allowed_lateness: self.allowed_lateness,
            max_future: self.max_future,
            sketch: s.enabled.then_some(SketchConfig { relative_accuracy: s.relative_accuracy, max_bins: s.max_bins }),
        }
    }

    /// The longest a replay reaches back (ns): the longest resolution, the lateness and the margin.
    /// Windows of older event time (an import of old data) are rebuilt only from what this holds.
    pub fn replay_window(&self) -> i64 {
        let longest = self.resolutions.iter().max().copied().unwrap_or_default();
        let window = longest + self.allowed_lateness + self.replay_margin;
        i64::try_from(window.as_nanos()).unwrap_or(i64::MAX)
    }

    /// The time (ns, compared with the log's ingest times) a replay starts from for a partition emitted
    /// through `emitted_through`: the oldest window still open there, less the replay margin.
    pub fn replay_from(&self, emitted_through: i64) -> i64 {
        self.windows().replay_start(emitted_through).saturating_sub(self.replay_margin.as_nanos() as i64)
    }
}

/// A list of humantime durations (`["1m", "1h"]`).
mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|d| humantime::format_duration(*d).to_string()).collect::<Vec<_>>().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))))
            .collect()
    }
}
