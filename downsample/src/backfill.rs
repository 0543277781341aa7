//! Backfill: replay a past time range of the log outside the consumer group, into rollups (e.g. for a
//! resolution added to the config) or into raw points (to rebuild a store's lost range or shard). The
//! log is the Kafka topic ([`from_kafka`]) or, without Kafka, standalone's durable log itself
//! ([`from_log`]); both feed the same [`Backfill`].
//!
//! - **Range.** Records are read from `from - slack` (by message time, i.e. ingest time) until every
//!   partition's end as it was when the backfill started, or a record later than `to + slack`. The
//!   slack covers points ingested a while after their event time.
//! - **Rollups.** The range is widened to whole windows of the longest resolution asked for; only
//!   windows lying inside it are written, so edge windows are never written from part of their
//!   points. Rows carry the live workers' versions (their counts), so a backfill run twice changes
//!   nothing and never replaces a row built from more points.
//! - **Raw.** Points with `from <= time < to` are first deleted from the store (on the chosen shards),
//!   then written again from the log: exact counts, and a second run gives the same result.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use yaffle_core::{Batch, Point};
use yaffle_log::Log;
use yaffle_store::Store;

use crate::config::DownsampleConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// What to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Rollup rows.
    Rollups,
    /// Raw points.
    Raw,
}

/// A backfill's request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Start of the range (ns, inclusive).
    pub from_ns: i64,
    /// End of the range (ns, exclusive).
    pub to_ns: i64,
    /// Resolutions to compute; the configured ones when empty.
    pub resolutions: Vec<Duration>,
    /// Rollups or raw points.
    pub target: Target,
    /// Shards (0-based) whose raw points are rebuilt; all when empty.
    pub shards: Vec<usize>,
    /// How far outside the range (in ingest time) records are read.
    pub slack: Duration,
}

/// What a backfill did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Log records read.
    pub records: u64,
    /// Rollup rows written.
    pub rollups: u64,
    /// Raw points written.
    pub points: u64,
}

/// Rows or points are written in chunks of this many.
const CHUNK: usize = 50_000;

/// The state of one backfill: feed it records, then [`Backfill::finish`].
#[derive(Debug)]
pub struct Backfill {
    request: Request,
    store: Arc<dyn Store>,
    engine: Engine,
    /// Whole windows of the longest resolution around the range.
    window_range: (i64, i64),
    points: Vec<Point>,
    report: Report,
}

impl Backfill {
    /// Prepares a backfill; for raw points, deletes the range first.
    pub async fn start(config: &DownsampleConfig, store: Arc<dyn Store>, request: Request) -> Result<Self, String> {
        if request.from_ns >= request.to_ns {
            return Err("backfill: --from must be before --to".into());
        }
        let mut windows = config.windows();
        if !request.resolutions.is_empty() {
            windows.resolutions.clone_from(&request.resolutions);
        }
        let longest = windows.resolutions.iter().max().map_or(1, |r| r.as_nanos() as i64);
        let window_range = (
            request.from_ns.div_euclid(longest).checked_mul(longest).unwrap_or((i64::MIN / longest) * longest),
            request.to_ns.saturating_add(longest - 1).div_euclid(longest) * longest,
        );
        if request.target == Target::Raw {
            store.delete_points(request.from_ns, request.to_ns, &request.shards).await.map_err(|e| e.to_string())?;
        }
        let engine = Engine::new(windows, Arc::new(Metrics::default()));
        Ok(Self { request, store, engine, window_range, points: Vec::new(), report: Report::default() })
    }

    /// The ingest-time range of records to read (ms): the request widened by the slack (and, for
    /// rollups, to whole windows).
    pub fn read_range_ms(&self) -> (i64, i64) {
        let slack = self.request.slack.as_nanos() as i64;
        let (from, to) = match self.request.target {
            Target::Rollups => self.window_range,
            Target::Raw => (self.request.from_ns, self.request.to_ns),
        };
        (from.saturating_sub(slack) / 1_000_000, to.saturating_add(slack) / 1_000_000)
    }

    /// Folds one record of `partition` (each partition has its own windows and watermark, as in the
    /// workers).
    /// `record_time` is the record's ingest time (ns).
    pub async fn add(&mut self, partition: i32, payload: &[u8], record_time: i64) -> Result<(), String> {
        self.report.records += 1;
        match self.request.target {
            Target::Rollups => {
                if !self.engine.owns(partition) {
                    self.engine.assign(partition, None);
                }
                self.engine
                    .add(partition, payload, record_time, false)
                    .map_err(|e| format!("a record does not decode: {e}"))?;
                if self.engine.pending().len() >= CHUNK {
                    self.write_rollups().await?;
                }
            }
            Target::Raw => {
                let batch = Batch::decode(payload).map_err(|e| format!("a record does not decode: {e}"))?;
                let (from, to) = (self.request.from_ns, self.request.to_ns);
                self.points.extend(batch.points.into_iter().filter(|p| p.timestamp >= from && p.timestamp < to));
                if self.points.len() >= CHUNK {
                    self.write_points().await?;
                }
            }
        }
        Ok(())
    }

    /// Writes what is left and reports.
    pub async fn finish(mut self) -> Result<Report, String> {
        self.engine.flush();
        self.write_rollups().await?;
        self.write_points().await?;
        Ok(self.report)
    }

    async fn write_rollups(&mut self) -> Result<(), String> {
        let (from, to) = self.window_range;
        self.engine.retain_pending(|r| {
            r.window_start_ns >= from && r.window_start_ns + i64::from(r.resolution_s) * 1_000_000_000 <= to
        });
        let written =
            self.engine.write_pending(self.store.as_ref()).await.map_err(|e| format!("writing rollups: {e}"))?;
        self.report.rollups += written as u64;
        Ok(())
    }

    async fn write_points(&mut self) -> Result<(), String> {
        if !self.points.is_empty() {
            let n = self.store.append_points(&self.points, &self.request.shards).await.map_err(|e| e.to_string())?;
            self.report.points += n;
            self.points.clear();
        }
        Ok(())
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template =
        format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> "));
    bar
}

/// Runs a backfill over a durable log (standalone without Kafka, the server stopped: the log is
/// locked by whoever has it open): its records from the position of `from - slack` by ingest time
/// until its end, or a record later than `to + slack`, as one partition.
pub async fn from_log(
    config: &DownsampleConfig,
    store: Arc<dyn Store>,
    request: Request,
    log: &Log,
) -> Result<Report, String> {
    let mut backfill = Backfill::start(config, store, request).await?;
    let (from_ms, to_ms) = backfill.read_range_ms();
    let start = log.position_at_time(from_ms.saturating_mul(1_000_000)).map_err(|e| e.to_string())?;
    let end = log.end();
    let bar = progress_bar(end.saturating_sub(start), "log bytes");
    let mut reader = log.reader_at(start);
    'read: loop {
        let records = reader.next(1 << 20, Duration::ZERO).await.map_err(|e| format!("reading the log: {e}"))?;
        if records.is_empty() {
            break;
        }
        for r in records {
            if r.position >= end || r.ingest_time / 1_000_000 > to_ms {
                break 'read;
            }
            backfill
                .add(0, &r.payload, r.ingest_time)
                .await
                .map_err(|e| format!("log position {}: {e}", r.position))?;
            bar.set_position(r.next - start);
        }
    }
    let report = backfill.finish().await?;
    bar.finish_with_message(format!("{} rollups, {} points written", report.rollups, report.points));
    Ok(report)
}

/// Runs a backfill over the Kafka topic. Blocking (the consumer polls on this thread); `handle` runs
/// the store writes.
pub fn from_kafka(
    config: &DownsampleConfig,
    store: Arc<dyn Store>,
    request: Request,
    handle: &Handle,
) -> Result<Report, String> {
    let k = &config.kafka;
    let timeout = k.request_timeout;
    let mut backfill = handle.block_on(Backfill::start(config, store, request))?;
    let (from_ms, to_ms) = backfill.read_range_ms();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("{}-backfill-{}", k.group_id, std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", k.fetch_wait_max.as_millis().to_string())
        .create()
        .map_err(|e| format!("kafka consumer for {}: {e}", k.brokers))?;
    let metadata =
        consumer.fetch_metadata(Some(&k.topic), timeout).map_err(|e| format!("topic {} metadata: {e}", k.topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == k.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic {} has no partitions (does it exist?)", k.topic));
    }
    let mut times = TopicPartitionList::new();
    for &p in &partitions {
        times.add_partition_offset(&k.topic, p, Offset::Offset(from_ms.max(0))).map_err(|e| e.to_string())?;
    }
    let starts = consumer.offsets_for_times(times, timeout).map_err(|e| format!("offsets for times: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    // Per partition: the next offset to read and the end (exclusive) as of now.
    let mut remaining = std::collections::HashMap::new();
    let mut total = 0u64;
    for &p in &partitions {
        let (_, high) = consumer.fetch_watermarks(&k.topic, p, timeout).map_err(|e| format!("watermarks: {e}"))?;
        let start = match starts.find_partition(&k.topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => high,
        };
        if start < high {
            assignment.add_partition_offset(&k.topic, p, Offset::Offset(start)).map_err(|e| e.to_string())?;
            remaining.insert(p, (start, high));
            total += (high - start) as u64;
        }
    }
    let bar = progress_bar(total, "records");
    consumer.assign(&assignment).map_err(|e| format!("assigning partitions: {e}"))?;
    let mut idle_since = std::time::Instant::now();
    while !remaining.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            if idle_since.elapsed() > timeout {
                return Err(format!("no record for {timeout:?} with partitions {:?} unfinished", remaining.keys()));
            }
            continue;
        };
        idle_since = std::time::Instant::now();
        let m = m.map_err(|e| format!("reading {}: {e}", k.topic))?;
        let p = m.partition();
        let Some(&(start, high)) = remaining.get(&p) else { continue };
        let past_range = m.timestamp().to_millis().is_some_and(|t| t > to_ms);
        if m.offset() >= high || past_range {
            bar.inc((high - m.offset().max(start)) as u64);
            remaining.remove(&p);
            continue;
        }
        let time = m.timestamp().to_millis().map_or(i64::MAX, |t| t.saturating_mul(1_000_000));
        handle.block_on(backfill.add(p, m.payload().unwrap_or_default(), time))?;
        bar.inc(1);
        if m.offset() + 1 >= high {
            remaining.remove(&p);
        }
    }
    let report = handle.block_on(backfill.finish())?;
    bar.finish_with_message(format!("{} rollups, {} points written", report.rollups, report.points));
    Ok(report)
}
