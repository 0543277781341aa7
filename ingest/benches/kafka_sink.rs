//! Kafka sink throughput and bytes on the wire against a plain rdkafka producer, side by side in one
//! run, on the same real broker (tansu of `scripts/kafka`, started if needed).
//!
//! Both send the same points (TSBS cpu-only shape: 1 000 hosts, 10 float fields per point) with the
//! same producer settings (idempotent, `acks=all`, lz4, `linger.ms=5`) to a fresh 12-partition topic,
//! and finish when every message is acknowledged:
//! - **sink**: Yaffle's Kafka sink reading the durable log (one batch-codec message per partition per
//!   step, partitioned by series);
//! - **plain**: one message per point, its line protocol keyed by the series (what Telegraf's Kafka
//!   output sends).
//!
//! Reports values/s and bytes per value on the wire (what a consumer reading the topic back receives,
//! from librdkafka's `rx_bytes`). Run: `cargo bench -p yaffle-ingest --bench kafka_sink`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::sync::watch;
use yaffle_core::tsbs::FIELDS;
use yaffle_core::{Batch, Point};
use yaffle_ingest::Metrics;
use yaffle_ingest::sinks::kafka::{Compression, KafkaSink, KafkaSinkConfig};
use yaffle_log::{CursorName, Log, LogConfig};

#[path = "../../tests/peers/kafka.rs"]
mod peer;

#[path = "support/points.rs"]
mod shared;
use shared::points;

const ROUNDS: usize = 3;
const PARTITIONS: i32 = 12;

fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5");
    c
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = producer_config(brokers).create().unwrap();
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
}

fn line(p: &Point) -> String {
    let fields: Vec<String> = p.fields.iter().map(|(k, v)| format!("{k}={}", v.as_f64().unwrap())).collect();
    format!("{} {} {}", p.series, fields.join(","), p.timestamp)
}

fn run_plain(brokers: &str, topic: &str, points: &[Point]) -> f64 {
    let producer: BaseProducer =
        producer_config(brokers).set("queue.buffering.max.messages", "1000000").create().unwrap();
    let start = Instant::now();
    for p in points {
        let (key, payload) = (p.series.to_string(), line(p));
        let mut record = BaseRecord::<String, String>::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    start.elapsed().as_secs_f64()
}

async fn run_sink(brokers: &str, topic: &str, points: &[Point]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut log_config = LogConfig::default();
    log_config.cursors.kafka.enabled = true;
    let log = Arc::new(Log::open(dir.path(), &log_config, Default::default()).unwrap());
    for chunk in points.chunks(1_000) {
        log.append(Batch::new(chunk.to_vec()).encode()).await.unwrap();
    }
    let end = log.end();
    let config = KafkaSinkConfig {
        enabled: true,
        brokers: brokers.into(),
        topic: topic.into(),
        partitions: PARTITIONS,
        compression: Compression::Lz4,
        linger: Duration::from_millis(5),
        ..KafkaSinkConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    let start = Instant::now();
    let task = KafkaSink::new(Arc::clone(&log), config, Arc::new(Metrics::default()))
        .spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    while log.cursor_position(CursorName::Kafka) < end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    task.await.unwrap();
    secs
}

/// Keeps librdkafka's latest `rx_bytes`.
struct RxBytes(AtomicI64);

impl ClientContext for RxBytes {
    fn stats(&self, statistics: Statistics) {
        self.0.store(statistics.rx_bytes, Ordering::Relaxed);
    }
}

impl ConsumerContext for RxBytes {}

/// Reads the whole topic back; returns the bytes received from the broker.
fn bytes_on_the_wire(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer<RxBytes> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-reader")
        .set("fetch.wait.max.ms", "10")
        .set("statistics.interval.ms", "100")
        .create_with_context(RxBytes(AtomicI64::new(0)))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        ends.push(consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1);
    }
    consumer.assign(&tpl).unwrap();
    let mut next = vec![0i64; PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(300);
    while next.iter().zip(&ends).any(|(n, e)| n < e) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::Message as _;
            next[m.partition() as usize] = m.offset() + 1;
        }
    }
    // One more statistics interval, so rx_bytes covers the last fetch.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        consumer.poll(Duration::from_millis(50));
    }
    consumer.context().0.load(Ordering::Relaxed)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let brokers = peer::shared();
    let points = points();
    let values = (points.len() * FIELDS.len()) as f64;
    println!("kafka_sink: {} points, {values} values per run, {ROUNDS} rounds alternating", points.len());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (mut sink, mut plain) = (Vec::new(), Vec::new());
    let (mut sink_topic, mut plain_topic) = (String::new(), String::new());
    for round in 0..ROUNDS {
        plain_topic = format!("bench-plain-{nanos}-{round}");
        runtime.block_on(create_topic(&brokers, &plain_topic));
        plain.push(run_plain(&brokers, &plain_topic, &points));
        sink_topic = format!("bench-sink-{nanos}-{round}");
        runtime.block_on(create_topic(&brokers, &sink_topic));
        sink.push(runtime.block_on(run_sink(&brokers, &sink_topic, &points)));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, p) = (median(&mut sink), median(&mut plain));
    let (sink_bytes, plain_bytes) =
        (bytes_on_the_wire(&brokers, &sink_topic), bytes_on_the_wire(&brokers, &plain_topic));
    for (name, secs, bytes) in [("yaffle sink", s, sink_bytes), ("plain producer", p, plain_bytes)] {
        println!(
            "{name:>15}: {:>10.0} values/s, {:.2} bytes per value on the wire (median of {ROUNDS}: {secs:.2} s)",
            values / secs,
            bytes as f64 / values
        );
    }
    println!(
        "ratio: sink is {:.2}x the plain producer's values/s with {:.2}x fewer bytes per value",
        p / s,
        plain_bytes as f64 / sink_bytes as f64
    );
}
