//! The Kafka sink against a real broker (tansu via `scripts/kafka`): partitioning by series, one
//! message per partition per step (split under the size limit), delivery before the cursor moves,
//! undecodable records skipped and counted, and a broker outage the sink rides out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::watch;
use yaffle_core::strategy::{Distribution, DistributionConfig};
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};

use super::*;
use crate::metrics::Metrics;
use yaffle_log::{CursorName, Log, LogConfig};

#[path = "../../../../tests/peers/kafka.rs"]
mod peer;

const PARTITIONS: i32 = 4;

fn batch(step: i64, hosts: usize) -> Vec<u8> {
    Batch::new(
        (0..hosts)
            .map(|h| {
                let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), format!("h{h}"))]));
                Point::new(key, vec![("usage".into(), FieldValue::Float(step as f64))], step * 1_000_000_000)
            })
            .collect(),
    )
    .encode()
}

fn open_log(dir: &std::path::Path, metrics: &Arc<Metrics>) -> Arc<Log> {
    let mut config = LogConfig::default();
    config.cursors.kafka.enabled = true;
    Arc::new(Log::open(dir, &config, Arc::clone(&metrics.log)).unwrap())
}

fn sink_config(brokers: &str, topic: &str) -> KafkaSinkConfig {
    KafkaSinkConfig {
        enabled: true,
        brokers: brokers.into(),
        topic: topic.into(),
        partitions: PARTITIONS,
        compression: Compression::Zstd,
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        delivery_timeout: Duration::from_secs(5),
        ..KafkaSinkConfig::default()
    }
}

/// Every message of `topic`: (partition, timestamp ms, points), read with a consumer outside any group.
fn read_all(brokers: &str, topic: &str, expected_points: usize) -> Vec<(i32, i64, Vec<Point>)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "yaffle-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let (mut out, mut points) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while points < expected_points {
        assert!(Instant::now() < deadline, "read {points} of {expected_points} points from {topic}");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let batch = Batch::decode(m.payload().unwrap()).unwrap();
            points += batch.points.len();
            out.push((m.partition(), m.timestamp().to_millis().unwrap(), batch.points));
        }
    }
    // Nothing more than expected arrives.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            panic!("an extra message: {:?}", m.map(|m| m.partition()));
        }
    }
    out
}

async fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_lands_in_one_partition_one_message_per_partition_per_step() {
    let brokers = peer::shared();
    let topic = unique("partitioning");
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = open_log(dir.path(), &metrics);
    for step in 0..20 {
        log.append(batch(step, 50)).await.unwrap();
    }
    let (stop, stopped) = watch::channel(false);
    let task = KafkaSink::new(Arc::clone(&log), sink_config(&brokers, &topic), Arc::clone(&metrics))
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    let end = log.end();
    wait_until("the cursor passed every record", Duration::from_secs(30), || {
        log.cursor_position(CursorName::Kafka) == end
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();

    let messages = read_all(&brokers, &topic, 20 * 50);
    let distribution = Distribution::new(&DistributionConfig::default()).unwrap();
    let mut partition_of: HashMap<u64, i32> = HashMap::new();
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (partition, _, points) in &messages {
        for p in points {
            let expected = Distribution::target(distribution.route(&p.series, p.series_id), PARTITIONS as usize);
            assert_eq!(*partition as usize, expected, "{} routed by the series strategy", p.series.canonical());
            assert_eq!(
                *partition_of.entry(p.series_id.0).or_insert(*partition),
                *partition,
                "a series in two partitions"
            );
            *seen.entry((p.series.tag("host").unwrap().to_string(), p.timestamp)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 20 * 50, "every point arrived");
    assert!(seen.values().all(|&n| n == 1), "no point arrived twice");
    let used: std::collections::BTreeSet<i32> = messages.iter().map(|m| m.0).collect();
    assert_eq!(used.len(), PARTITIONS as usize, "50 series spread over every partition");
    // One message per partition per step: never more messages than steps x partitions.
    assert!(messages.len() <= 20 * PARTITIONS as usize, "{} messages", messages.len());
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(messages.iter().all(|m| (now_ms - m.1).abs() < 120_000), "message timestamps are ingest times");
    assert_eq!(metrics.kafka_points.get(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_is_skipped_and_counted_and_large_steps_are_split_under_the_limit() {
    let brokers = peer::shared();
    let topic = unique("split");
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = open_log(dir.path(), &metrics);
    log.append(batch(0, 2000)).await.unwrap();
    log.append(b"not a batch".to_vec()).await.unwrap();
    log.append(batch(1, 2000)).await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let sinks = yaffle_log::sink::Supervisor::new(&mut registry);
    let config = KafkaSinkConfig { max_message_bytes: bytesize::ByteSize::kib(4), ..sink_config(&brokers, &topic) };
    let (stop, stopped) = watch::channel(false);
    let task = KafkaSink::new(Arc::clone(&log), config, Arc::clone(&metrics)).spawn(&sinks, stopped);
    let end = log.end();
    wait_until("the cursor passed every record", Duration::from_secs(30), || {
        log.cursor_position(CursorName::Kafka) == end
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();

    let messages = read_all(&brokers, &topic, 2 * 2000);
    let points: std::collections::BTreeSet<(String, i64)> = messages
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| (p.series.tag("host").unwrap().to_string(), p.timestamp)))
        .collect();
    assert_eq!(points.len(), 4000, "every point of the good records arrived once");
    assert!(messages.len() > 2 * PARTITIONS as usize, "{} messages: the steps were split", messages.len());
    for (_, _, points) in &messages {
        assert!(Batch::new(points.clone()).encode().len() <= 4 * 1024, "a message over the limit");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("yaffle_sink_skipped_records_total{sink=\"kafka\"} 1\n"), "{text}");
    assert_eq!(sinks.statuses()["kafka"].state, yaffle_log::sink::SinkState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_down_the_cursor_waits_and_the_backlog_drains_after() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = peer::OwnBroker::new(&data.path().join("broker"), port);
    let topic = unique("outage");
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = open_log(dir.path(), &metrics);
    for step in 0..5 {
        log.append(batch(step, 10)).await.unwrap();
    }
    let (stop, stopped) = watch::channel(false);
    let task = KafkaSink::new(Arc::clone(&log), sink_config(&broker.address, &topic), Arc::clone(&metrics))
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    // No broker: ingest keeps appending, the cursor stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for step in 5..10 {
        log.append(batch(step, 10)).await.unwrap();
    }
    assert_eq!(log.cursor_position(CursorName::Kafka), 0);

    broker.start();
    let end = log.end();
    wait_until("the backlog drained", Duration::from_secs(60), || log.cursor_position(CursorName::Kafka) == end).await;
    // Down again mid-stream, then back: nothing lost.
    broker.stop();
    for step in 10..15 {
        log.append(batch(step, 10)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.start();
    let end = log.end();
    wait_until("the second backlog drained", Duration::from_secs(120), || {
        log.cursor_position(CursorName::Kafka) == end
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();

    let messages = read_all(&broker.address, &topic, 15 * 10);
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (_, _, points) in &messages {
        for p in points {
            *seen.entry((p.series.tag("host").unwrap().to_string(), p.timestamp)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 150, "every point arrived");
    assert!(seen.values().all(|&n| n == 1), "no point twice: {seen:?}");
}
