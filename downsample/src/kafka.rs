//! The downsampling worker on Kafka: one member of a consumer group, owning whole partitions.
//!
//! **No checkpoint; state rebuilt by replay.** A worker keeps its windows in memory only. It writes the
//! rollups of the windows its watermark has closed, then commits its read position, recording in the
//! commit's metadata the watermark through which it has emitted. Whoever is assigned the partition
//! next (the same worker after a crash, another after a rebalance) seeks back by time
//! (`offsets_for_times`) to the start of the oldest window still open at `emitted_through`, less
//! `replay_margin`, far enough to see every point of every window open at the commit, and replays
//! from there. Up to the committed offset it only rebuilds windows: every window the replay's
//! watermark closes was emitted by the previous owner, so it is closed unemitted (feeding the coarser
//! resolutions, and holding no more windows open than a live read); from the commit on it emits as
//! usual. A partition never committed is read from its beginning.
//!
//! **Brokers that drop commit metadata.** tansu 0.6 stores the metadata but does not return it with
//! the committed offset. Then the worker first reads the last record before the commit, takes its
//! timestamp as the emitted watermark (ingest stamps a record with its last point's ingest time) and
//! seeks back from it: the same replay, found by one extra fetch.
//!
//! **Idempotent writes.** A window emitted twice anyway (a worker that died between writing its rows
//! and committing) is written with the same key and the same version (its count), so it replaces
//! itself: replays never double-count. Commits happen only after the rows they cover are written.
//!
//! The log's message timestamps are ingest times and the seek compares them with event times: the
//! replay margin covers points whose event time runs ahead of their ingest time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use yaffle_store::Store;

use crate::config::DownsampleConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;

const METADATA_PREFIX: &str = "yaffle-downsample emitted_through=";

/// The commit metadata recording the emitted watermark.
pub fn commit_metadata(emitted_through: Option<i64>) -> String {
    emitted_through.map_or_else(String::new, |t| format!("{METADATA_PREFIX}{t}"))
}

/// Reads [`commit_metadata`] back; `None` for anything else (no commit, another writer's metadata).
pub fn parse_metadata(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(METADATA_PREFIX)?.parse().ok()
}

/// A partition handed to this worker, and where its replay starts.
#[derive(Debug)]
struct Assigned {
    partition: i32,
    emitted_through: Option<i64>,
    /// The committed offset: records before it are a replay.
    committed: i64,
    /// Where reading starts; `None`: the beginning (never committed).
    start: Option<i64>,
    /// The commit came without its metadata: `start` is the record before the commit, read for its
    /// timestamp before the replay proper.
    probe: bool,
}

#[derive(Debug)]
enum Change {
    Assigned(Vec<Assigned>),
    Revoked(Vec<i32>),
}

/// Seeks newly assigned partitions back by time, and tells the poll loop what changed.
#[derive(Debug)]
struct Context {
    config: DownsampleConfig,
    changes: Mutex<Vec<Change>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => match self.replay_positions(consumer, tpl) {
                Ok((positions, assigned)) => {
                    if let Err(e) = consumer.assign(&positions) {
                        tracing::error!(error = %e, "cannot seek the assigned partitions back; reading from the commits");
                    }
                    self.changes.lock().expect("changes lock").push(Change::Assigned(assigned));
                }
                Err(e) => {
                    // Without the commits there is no safe place to resume: leave the group's
                    // assignment unread until the next rebalance rather than guess.
                    tracing::error!(error = %e, "cannot read the committed offsets; unassigning");
                    let _ = consumer.assign(&TopicPartitionList::new());
                }
            },
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "revoked");
                self.changes.lock().expect("changes lock").push(Change::Revoked(partitions));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

impl Context {
    /// For each assigned partition: its commit, and where its replay starts.
    fn replay_positions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> KafkaResult<(TopicPartitionList, Vec<Assigned>)> {
        let committed = consumer.committed_offsets(tpl.clone(), self.config.kafka.request_timeout)?;
        let mut assigned = Vec::new();
        for e in committed.elements() {
            let emitted_through = parse_metadata(e.metadata());
            let committed = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            let (start, probe) = match emitted_through {
                Some(t) => (Some(self.offset_at(consumer, e.partition(), t, committed)?), false),
                None if committed > 0 => (Some(committed - 1), true),
                None => (None, false),
            };
            tracing::info!(partition = e.partition(), ?start, committed, emitted_through, probe, "assigned");
            assigned.push(Assigned { partition: e.partition(), emitted_through, committed, start, probe });
        }
        let mut positions = TopicPartitionList::new();
        for a in &assigned {
            let start = a.start.map_or(Offset::Beginning, Offset::Offset);
            positions.add_partition_offset(&self.config.kafka.topic, a.partition, start)?;
        }
        Ok((positions, assigned))
    }

    /// The offset a replay for a partition emitted through `emitted_through` (ns) starts at: the first
    /// record stamped at or after [`DownsampleConfig::replay_from`], and never after `committed`.
    fn offset_at<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partition: i32,
        emitted_through: i64,
        committed: i64,
    ) -> KafkaResult<i64> {
        let back_ms = self.config.replay_from(emitted_through) / 1_000_000;
        let mut times = TopicPartitionList::new();
        times.add_partition_offset(&self.config.kafka.topic, partition, Offset::Offset(back_ms.max(0)))?;
        let found = consumer.offsets_for_times(times, self.config.kafka.request_timeout)?;
        Ok(match found.find_partition(&self.config.kafka.topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.min(committed),
            _ => committed, // nothing stamped that late: nothing to replay
        })
    }
}

/// Per owned partition: the next offset to read, and where the replay turns into new reading.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The offset the next record must have after an assignment or a seek (records fetched before
    /// it are skipped).
    expect: Option<i64>,
    /// The offset after the last record read.
    next: i64,
    committed: i64,
    probe: bool,
    replaying: bool,
    /// When the assignment came, and the points replayed since (for the rebuild's duration and rate).
    assigned_at: Instant,
    replayed_points: u64,
}

/// Runs a worker until `stop` is set. Blocking: call it from a thread of its own; `handle` runs the
/// store writes.
pub fn run_worker(
    config: &DownsampleConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    stop: &AtomicBool,
    handle: &Handle,
) -> Result<(), String> {
    let k = &config.kafka;
    let context = Context { config: config.clone(), changes: Mutex::new(Vec::new()) };
    let consumer: BaseConsumer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", k.fetch_wait_max.as_millis().to_string())
        .set("session.timeout.ms", k.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (k.session_timeout.as_millis() / 4).max(100).to_string())
        .set("partition.assignment.strategy", "range")
        .create_with_context(context)
        .map_err(|e| format!("kafka consumer for {}: {e}", k.brokers))?;
    consumer.subscribe(&[&k.topic]).map_err(|e| format!("subscribing to {}: {e}", k.topic))?;
    tracing::info!(brokers = %k.brokers, topic = %k.topic, group = %k.group_id, "downsampling worker started");

    let mut engine = Engine::new(config.windows(), Arc::clone(&metrics));
    let mut progress: HashMap<i32, Progress> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut paused = false;
    while !stop.load(Ordering::Relaxed) {
        let message = consumer.poll(Duration::from_millis(100));
        apply_changes(&consumer, &mut engine, &mut progress, &metrics);
        match message {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(pos) = progress.get_mut(&p) else { continue };
                if pos.expect.is_some_and(|o| o != m.offset()) || m.offset() < pos.next {
                    continue; // fetched before a seek
                }
                pos.expect = None;
                if pos.probe {
                    // The record before the commit: its time is the emitted watermark.
                    let emitted = m.timestamp().to_millis().unwrap_or(0).saturating_mul(1_000_000);
                    let ctx = consumer.context();
                    let start = ctx.offset_at(&consumer, p, emitted, m.offset()).unwrap_or(m.offset());
                    if let Err(e) = consumer.seek(&k.topic, p, Offset::Offset(start), k.request_timeout) {
                        tracing::error!(partition = p, error = %e, "cannot seek back; replaying from the commit");
                    } else {
                        tracing::info!(partition = p, start, emitted, "seeking back to replay");
                        *pos = Progress { expect: Some(start), probe: false, ..*pos };
                        continue;
                    }
                    pos.probe = false;
                }
                pos.next = m.offset() + 1;
                if pos.replaying {
                    metrics.replayed_records.inc();
                }
                let time = m.timestamp().to_millis().map_or(i64::MAX, |t| t.saturating_mul(1_000_000));
                match engine.add(p, m.payload().unwrap_or_default(), time, pos.replaying) {
                    Ok(n) if pos.replaying => pos.replayed_points += n as u64,
                    Ok(_) => {}
                    Err(e) => {
                        metrics.bad_records.inc();
                        tracing::error!(partition = p, offset = m.offset(), error = %e, "skipping a record that does not decode");
                    }
                }
                if pos.replaying && pos.next >= pos.committed {
                    pos.replaying = false;
                    engine.caught_up(p);
                    let seconds = pos.assigned_at.elapsed().as_secs_f64();
                    metrics.rebuild_seconds.observe(seconds);
                    tracing::info!(
                        partition = p,
                        offset = pos.next,
                        points = pos.replayed_points,
                        seconds,
                        points_per_second = (pos.replayed_points as f64 / seconds) as u64,
                        "windows rebuilt; caught up with the commit"
                    );
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer"),
            None => {}
        }
        if last_commit.elapsed() >= config.commit_interval {
            last_commit = Instant::now();
            let written = write_and_commit(&consumer, &mut engine, &progress, store.as_ref(), handle);
            let over = engine.pending().len() > config.max_pending_rows;
            if over != paused {
                if let Ok(assignment) = consumer.assignment() {
                    let _ = if over { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
                }
                paused = over;
                tracing::warn!(paused, pending = engine.pending().len(), written, "rollup backlog");
            }
        }
    }
    write_and_commit(&consumer, &mut engine, &progress, store.as_ref(), handle);
    close(consumer);
    Ok(())
}

fn apply_changes(
    consumer: &BaseConsumer<Context>,
    engine: &mut Engine,
    progress: &mut HashMap<i32, Progress>,
    metrics: &Metrics,
) {
    let changes = std::mem::take(&mut *consumer.context().changes.lock().expect("changes lock"));
    for change in changes {
        match change {
            Change::Assigned(partitions) => {
                for a in partitions {
                    engine.assign(a.partition, a.emitted_through);
                    let replaying = a.start.is_some_and(|s| s < a.committed);
                    let (expect, probe, committed) = (a.start, a.probe, a.committed);
                    let assigned_at = Instant::now();
                    progress.insert(
                        a.partition,
                        Progress { expect, next: 0, committed, probe, replaying, assigned_at, replayed_points: 0 },
                    );
                    metrics.rebuilds.inc();
                }
            }
            Change::Revoked(partitions) => {
                for p in partitions {
                    engine.revoke(p);
                    progress.remove(&p);
                }
            }
        }
    }
}

/// Writes the finished rows, then commits each owned partition's position with its emitted
/// watermark. Returns whether the rows were written.
fn write_and_commit(
    consumer: &BaseConsumer<Context>,
    engine: &mut Engine,
    progress: &HashMap<i32, Progress>,
    store: &dyn Store,
    handle: &Handle,
) -> bool {
    engine.report_late();
    if let Err(e) = handle.block_on(engine.write_pending(store)) {
        tracing::warn!(error = %e, rows = engine.pending().len(), "writing rollups failed; retrying");
        return false;
    }
    let topic = &consumer.context().config.kafka.topic;
    let mut tpl = TopicPartitionList::new();
    for (&p, pos) in progress {
        // Until the replay reaches the commit (or anything is read), the commit stays where it was.
        if pos.probe || pos.replaying || pos.next <= pos.committed {
            continue;
        }
        if tpl.add_partition_offset(topic, p, Offset::Offset(pos.next)).is_err() {
            continue;
        }
        if let Some(mut e) = tpl.find_partition(topic, p) {
            e.set_metadata(commit_metadata(engine.emitted_through(p)));
        }
    }
    if tpl.count() > 0 {
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => tracing::debug!(commits = ?commits(&tpl), "committed"),
            Err(e) => tracing::warn!(error = %e, "offset commit failed; the next owner replays further"),
        }
    }
    true
}

/// (partition, offset, metadata) of each commit, for the logs.
fn commits(tpl: &TopicPartitionList) -> Vec<(i32, Offset, String)> {
    tpl.elements().iter().map(|e| (e.partition(), e.offset(), e.metadata().to_string())).collect()
}

/// Leaves the group. librdkafka's close can wait on a broker that is gone: give it a few seconds.
fn close(consumer: BaseConsumer<Context>) {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = done.send(());
    });
    if wait.recv_timeout(Duration::from_secs(10)).is_err() {
        tracing::warn!("the kafka consumer did not close within 10 s; leaving it");
    }
}
