//! Downsampling workers against a real broker (tansu via `scripts/kafka`) and the embedded store:
//! rollups written through rebalances and worker restarts equal a batch recomputation, and a backfill
//! of a new resolution matches one too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type, UInt32Type, UInt64Type};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};
use yaffle_downsample::backfill::{self, Request, Target};
use yaffle_downsample::config::KafkaSourceConfig;
use yaffle_downsample::{DownsampleConfig, Metrics, kafka};
use yaffle_store::Store;
use yaffle_store::embedded::{EmbeddedConfig, EmbeddedStore};

#[path = "../../tests/peers/kafka.rs"]
mod peer;

const PARTITIONS: i32 = 4;
const SERIES: usize = 20;
const S: i64 = 1_000_000_000;

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn config(brokers: &str, topic: &str) -> DownsampleConfig {
    DownsampleConfig {
        resolutions: vec![Duration::from_secs(60), Duration::from_secs(300)],
        allowed_lateness: Duration::from_secs(5),
        replay_margin: Duration::from_secs(30),
        commit_interval: Duration::from_millis(100),
        kafka: KafkaSourceConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            group_id: unique("group"),
            session_timeout: Duration::from_secs(6),
            ..KafkaSourceConfig::default()
        },
        ..DownsampleConfig::default()
    }
}

/// Event time starts 30 minutes ago, aligned to 5 minutes, so message times (= event times, as
/// ingest stamps them) fall inside the broker's retention and offsets_for_times finds them.
fn t0() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let t = now - 1800 * S;
    t - t.rem_euclid(300 * S)
}

/// The points of step `step` (10 s of event time per step, one point per series per second), by
/// partition.
fn step_points(t0: i64, step: i64) -> Vec<Vec<Point>> {
    let mut by_partition = vec![Vec::new(); PARTITIONS as usize];
    for s in 0..10 {
        let ts = t0 + (step * 10 + s) * S;
        for h in 0..SERIES {
            let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), format!("h{h}"))]));
            // Integers, so sums are exact whatever the order.
            let v = ((step * 10 + s) * 7 + h as i64 * 13) % 101;
            by_partition[h % PARTITIONS as usize].push(Point::new(
                key,
                vec![("usage".into(), FieldValue::Float(v as f64))],
                ts,
            ));
        }
    }
    by_partition
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
}

/// Produces steps `steps`, one message per partition per step, timestamped with its last event time.
fn produce(brokers: &str, topic: &str, t0: i64, steps: std::ops::Range<i64>, all: &mut Vec<Point>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for step in steps {
        for (p, points) in step_points(t0, step).into_iter().enumerate() {
            let ts_ms = points.last().unwrap().timestamp / 1_000_000;
            let payload = Batch::new(points.clone()).encode();
            all.extend(points);
            producer
                .send(BaseRecord::<(), _>::to(topic).partition(p as i32).payload(&payload).timestamp(ts_ms))
                .unwrap();
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

struct Worker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), String>>,
}

fn start_worker(config: &DownsampleConfig, store: &Arc<EmbeddedStore>) -> Worker {
    let stop = Arc::new(AtomicBool::new(false));
    let (config, store, handle) =
        (config.clone(), Arc::clone(store) as Arc<dyn Store>, tokio::runtime::Handle::current());
    let flag = Arc::clone(&stop);
    let thread =
        std::thread::spawn(move || kafka::run_worker(&config, store, Arc::new(Metrics::default()), &flag, &handle));
    Worker { stop, thread }
}

impl Worker {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "a worker did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.thread.join().unwrap().unwrap();
    }
}

/// (host, resolution s, start) -> (count, sum, min, max, first, last)
type Table = BTreeMap<(String, u32, i64), (u64, f64, f64, f64, (i64, f64), (i64, f64))>;

/// The batch recomputation, keeping windows closed by the watermark `through` (all when `None`).
fn recompute(points: &[Point], resolutions: &[u64], lateness: i64, through: Option<i64>) -> Table {
    let mut t = Table::new();
    for p in points {
        let v = p.fields[0].1.as_f64().unwrap();
        for &res in resolutions {
            let r = res as i64 * S;
            let start = p.timestamp.div_euclid(r) * r;
            if through.is_some_and(|w| start + r + lateness > w) {
                continue;
            }
            let key = (p.series.tag("host").unwrap().to_string(), res as u32, start);
            let e = t.entry(key).or_insert((0, 0.0, f64::MAX, f64::MIN, (i64::MAX, 0.0), (i64::MIN, 0.0)));
            e.0 += 1;
            e.1 += v;
            e.2 = e.2.min(v);
            e.3 = e.3.max(v);
            if p.timestamp < e.4.0 {
                e.4 = (p.timestamp, v);
            }
            if p.timestamp >= e.5.0 {
                e.5 = (p.timestamp, v);
            }
        }
    }
    t
}

async fn stored(store: &EmbeddedStore, resolutions: &[u64]) -> Table {
    let list: Vec<String> = resolutions.iter().map(u64::to_string).collect();
    let sql = format!(
        "SELECT tags['host'], resolution_s, CAST(time AS BIGINT), count, sum, min, max, first_ns, first, last_ns, last \
         FROM rollups WHERE resolution_s IN ({})",
        list.join(",")
    );
    let r = store.query(&sql).await.unwrap();
    let mut t = Table::new();
    for b in &r.batches {
        for i in 0..b.num_rows() {
            let f = |c: usize| b.column(c).as_primitive::<Float64Type>().value(i);
            let n = |c: usize| b.column(c).as_primitive::<Int64Type>().value(i);
            let key = (
                b.column(0).as_string::<i32>().value(i).to_string(),
                b.column(1).as_primitive::<UInt32Type>().value(i),
                n(2),
            );
            let row =
                (b.column(3).as_primitive::<UInt64Type>().value(i), f(4), f(5), f(6), (n(7), f(8)), (n(9), f(10)));
            assert!(t.insert(key.clone(), row).is_none(), "{key:?} twice in the rollups view");
        }
    }
    t
}

async fn wait_for_rows(store: &EmbeddedStore, resolutions: &[u64], rows: usize, timeout: Duration) -> Table {
    let deadline = Instant::now() + timeout;
    loop {
        let t = stored(store, resolutions).await;
        if t.len() >= rows || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_backfill(config: &DownsampleConfig, store: &Arc<EmbeddedStore>, request: &Request) -> backfill::Report {
    let (config, target, request) = (config.clone(), Arc::clone(store) as Arc<dyn Store>, request.clone());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || backfill::from_kafka(&config, target, request, &handle)).await.unwrap().unwrap()
}

fn assert_tables_equal(got: &Table, expected: &Table) {
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (k, e) in expected {
        assert_eq!(&got[k], e, "{k:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_through_rebalances_and_restarts_equal_a_batch_recomputation() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let brokers = peer::shared();
    let topic = unique("downsample");
    create_topic(&brokers, &topic).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), &EmbeddedConfig::default()).await.unwrap());
    let config = config(&brokers, &topic);
    let (t0, mut all) = (t0(), Vec::new());

    // 20 minutes of event time in three parts, with workers joining and leaving in between.
    produce(&brokers, &topic, t0, 0..40, &mut all);
    let a = start_worker(&config, &store);
    let expected_now = recompute(&all, &[60, 300], 5 * S, Some(all.iter().map(|p| p.timestamp).max().unwrap()));
    wait_for_rows(&store, &[60, 300], expected_now.len(), Duration::from_secs(60)).await;
    let b = start_worker(&config, &store); // a rebalance: a gives partitions to b
    produce(&brokers, &topic, t0, 40..80, &mut all);
    std::thread::sleep(Duration::from_secs(3));
    a.stop(); // b takes every partition and rebuilds their windows by replay
    produce(&brokers, &topic, t0, 80..120, &mut all);
    let c = start_worker(&config, &store);
    std::thread::sleep(Duration::from_secs(3));
    b.stop();

    let watermark = all.iter().map(|p| p.timestamp).max().unwrap();
    let expected = recompute(&all, &[60, 300], 5 * S, Some(watermark));
    let got = wait_for_rows(&store, &[60, 300], expected.len(), Duration::from_secs(60)).await;
    c.stop();
    assert_tables_equal(&got, &expected);

    // A resolution added later, backfilled over the whole history; run twice, nothing changes.
    let request = Request {
        from_ns: t0,
        to_ns: t0 + 1200 * S,
        resolutions: vec![Duration::from_secs(120)],
        target: Target::Rollups,
        shards: vec![],
        slack: Duration::from_secs(60),
    };
    for _ in 0..2 {
        let report = run_backfill(&config, &store, &request).await;
        // 10 or 11 windows per series, as t0 falls on a 2-minute boundary or not.
        let expected = recompute(&all, &[120], 0, None);
        assert_eq!(report.rollups, expected.len() as u64);
        assert_tables_equal(&stored(&store, &[120]).await, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_points_of_a_lost_range_are_rebuilt_from_the_log_exactly_even_twice() {
    let brokers = peer::shared();
    let topic = unique("rebuild");
    create_topic(&brokers, &topic).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), &EmbeddedConfig::default()).await.unwrap());
    let config = config(&brokers, &topic);
    let (t0, mut all) = (t0(), Vec::new());
    produce(&brokers, &topic, t0, 0..60, &mut all);
    assert_eq!(store.append_points(&all, &[]).await.unwrap(), all.len() as u64);
    let (from, to) = (t0 + 200 * S, t0 + 400 * S);
    store.delete_points(from, to, &[]).await.unwrap(); // the loss
    let count = |sql: &'static str| {
        let store = Arc::clone(&store);
        async move { store.query(sql).await.unwrap().batches[0].column(0).as_primitive::<Int64Type>().value(0) }
    };
    assert_eq!(count("SELECT count(*) FROM points").await as usize, all.len() - 200 * SERIES);
    let request = Request {
        from_ns: from,
        to_ns: to,
        resolutions: vec![],
        target: Target::Raw,
        shards: vec![],
        slack: Duration::from_secs(60),
    };
    for _ in 0..2 {
        let report = run_backfill(&config, &store, &request).await;
        assert_eq!(report.points, (200 * SERIES) as u64);
        assert_eq!(count("SELECT count(*) FROM points").await as usize, all.len());
        assert_eq!(
            count("SELECT count(*) FROM (SELECT DISTINCT series_id, time FROM points)").await as usize,
            all.len()
        );
    }
}
