//! The binary's own surface: `yaffle query`, and a curl-style write/read round trip.

use std::process::Command;
use std::time::Duration;

use crate::support::{BIN, Yaffle};

#[test]
fn curl_a_point_and_query_it_back_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let yaffle = Yaffle::start(dir.path(), &[]);
    let (status, body) = yaffle.write("/write?db=walk", "weather,city=Oslo temp=3.5 1700000000000000000");
    assert_eq!(status, 204, "{body}");
    assert_eq!(yaffle.wait_count("database = 'walk'", 1, Duration::from_secs(10)), 1);
    let out = Command::new(BIN)
        .args(["query", "--format", "csv", "SELECT measurement, tags['city'] AS city, field, value FROM points"])
        .env("YAFFLE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "measurement,city,field,value\nweather,Oslo,temp,3.5\n");
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let out = Command::new(BIN).arg("standalone").env("YAFFLE_LOG__FSYNC", "sometimes").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fsync must be"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `yaffle ingest` is a proxy: it tees to the real broker and keeps no store of its own, no
/// in-process downsampling, no evaluator; SQL says there is nothing to query here.
#[test]
fn the_ingest_role_tees_to_kafka_and_keeps_no_store_of_its_own() {
    let brokers = crate::kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("ingest-role-{}", std::process::id());
    let env = [
        ("YAFFLE_SINKS__KAFKA__ENABLED", "true"),
        ("YAFFLE_SINKS__KAFKA__BROKERS", brokers.as_str()),
        ("YAFFLE_SINKS__KAFKA__TOPIC", topic.as_str()),
    ];
    let ingest = Yaffle::start_as("ingest", dir.path(), &env);
    let body: String = (0..100).map(|i| format!("cpu,host=h{i} v={i} 1700000000000000000\n")).collect();
    assert_eq!(ingest.write("/write?db=proxy", &body).0, 204);
    let metrics =
        || crate::support::agent().get(&ingest.url("/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !metrics().contains("yaffle_ingest_kafka_sink_points_total 100") {
        assert!(std::time::Instant::now() < deadline, "the points never reached Kafka:\n{}", metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = metrics();
    assert!(!text.contains("yaffle_downsample_"), "no in-process downsampling");
    assert!(!dir.path().join("store").exists(), "no embedded store");
    let mut r = crate::support::agent().post(&ingest.url("/api/v1/sql")).send("SELECT 1").unwrap();
    assert_eq!(r.status(), 501);
    assert!(r.body_mut().read_to_string().unwrap().contains("no store to query here"));
}
