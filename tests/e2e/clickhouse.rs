//! Yaffle on the real 2x2 ClickHouse cluster (`scripts/clickhouse-cluster`) while its nodes fail.
//!
//! These tests stop and kill cluster nodes, so they take a lock and run one at a time; each restarts
//! what it stopped, even when it fails.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{BIN, Load, Yaffle, agent, assert_exactly_once, repo};

static CLUSTER: Mutex<()> = Mutex::new(());

fn cluster(args: &[&str]) {
    let out = std::process::Command::new(repo("scripts/clickhouse-cluster"))
        .args(args)
        .output()
        .expect("scripts/clickhouse-cluster");
    assert!(out.status.success(), "clickhouse-cluster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The whole cluster for one test: taken once every node runs, every node started again when dropped
/// (so a failing test leaves a whole cluster behind), released after that.
pub(crate) struct ExclusiveCluster {
    _lock: std::sync::MutexGuard<'static, ()>,
}

pub(crate) fn exclusive_cluster() -> ExclusiveCluster {
    let lock = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    cluster(&["start"]);
    ExclusiveCluster { _lock: lock }
}

impl Drop for ExclusiveCluster {
    fn drop(&mut self) {
        cluster(&["start"]);
    }
}

/// A config file for the test cluster, database `database`, with `extra` in `[store.clickhouse]` and
/// `sections` after the rest.
pub(crate) fn config(dir: &Path, database: &str, extra: &str, sections: &str) -> String {
    let file = dir.join("yaffle.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[store]
backend = "clickhouse"
[store.clickhouse]
database = "{database}"
shards = [["http://127.0.0.1:28121", "http://127.0.0.1:28122"], ["http://127.0.0.1:28123", "http://127.0.0.1:28124"]]
insert_timeout = "5s"
ddl_timeout = "10s"
{extra}
[sinks.clickhouse]
flush_interval = "200ms"
retry_max = "1s"
{sections}
"#
        ),
    )
    .unwrap();
    file.display().to_string()
}

pub(crate) fn database(test: &str) -> String {
    format!("e2e_{test}_{}", std::process::id())
}

fn start(dir: &Path, test: &str, extra: &str) -> Yaffle {
    // The raw points' path alone: the other cursors must stay where they are.
    let file = config(dir, &database(test), extra, "[downsample]\nstandalone = false");
    Yaffle::start(&dir.join("data"), &[("YAFFLE_CONFIG", &file)])
}

/// Waits until every replica of `table` has fetched what its peer holds, so any replica a read picks is
/// complete.
pub(crate) fn sync_replicas(test: &str, table: &str) {
    for node in 1..=4 {
        let url = format!("http://127.0.0.1:{}/", 28120 + node);
        let mut r = agent().post(&url).send(format!("SYSTEM SYNC REPLICA {}.{table}", database(test))).unwrap();
        assert_eq!(r.status(), 200, "sync replica on node {node}: {}", r.body_mut().read_to_string().unwrap());
    }
}

/// Between requests of each writer: a sustained ~2 000 points/s from two writers, which a debug build
/// on a busy 2-core machine keeps up with (throughput is the benchmark's business).
const SUSTAINED: Duration = Duration::from_millis(50);

const ROWS: &str = "SELECT tag_values[indexOf(tag_keys, 'writer')] AS w, value_int AS s FROM points";

fn count(y: &Yaffle) -> u64 {
    y.sql("SELECT count() AS n FROM points")[0]["n"].as_u64().unwrap()
}

fn wait_count(y: &Yaffle, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while count(y) < n as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sigkill_of_a_replica_during_sustained_writes_loses_and_duplicates_nothing() {
    let _cluster = exclusive_cluster();
    let dir = tempfile::tempdir().unwrap();
    let yaffle = start(dir.path(), "replica", "");
    let load = Load::start(&yaffle.url("/write?db=ch&precision=ns"), 2, 50, SUSTAINED);
    std::thread::sleep(Duration::from_secs(2));
    cluster(&["kill-node", "1"]);
    cluster(&["kill-node", "4"]);
    std::thread::sleep(Duration::from_secs(4));
    cluster(&["start"]);
    std::thread::sleep(Duration::from_secs(2));
    let refused = load.refused();
    let acked = load.stop();
    assert!(acked.len() > 1000, "load was running ({} points)", acked.len());
    assert_eq!(refused, 0, "ingest refused writes while replicas were down");
    wait_count(&yaffle, acked.len(), Duration::from_secs(60));
    sync_replicas("replica", "points_local");
    assert_eq!(count(&yaffle), acked.len() as u64, "stored rows vs acknowledged points");
    assert_exactly_once(&yaffle, ROWS, &acked);
}

#[test]
fn a_whole_shard_down_for_a_minute_delays_only_itself() {
    let _cluster = exclusive_cluster();
    let dir = tempfile::tempdir().unwrap();
    let yaffle = start(dir.path(), "shard", "on_missing_shard = \"partial\"");
    let cursors = |name: &str| std::fs::read_to_string(dir.path().join("data/log").join(format!("{name}.cursor"))).ok();
    let (kafka, alert) = (cursors("kafka"), cursors("alert"));
    let load = Load::start(&yaffle.url("/write?db=ch&precision=ns"), 2, 50, SUSTAINED);
    std::thread::sleep(Duration::from_secs(2));
    cluster(&["stop-node", "3"]);
    cluster(&["stop-node", "4"]);
    let outage = Instant::now();

    // During the outage: ingest answers 204, shard 1 keeps filling, reads say shard 2 is missing.
    std::thread::sleep(Duration::from_secs(5));
    let (first, warning) = partial_count(&yaffle);
    assert!(warning.contains("shard 2"), "partial answer names the missing shard: {warning:?}");
    // PromQL over the cluster answers too, with Prometheus' `warnings` naming the missing shard.
    let (during, warnings) = promql_count(&yaffle);
    assert!(warnings.iter().any(|w| w.contains("shard 2")), "PromQL warnings name the missing shard: {warnings:?}");
    assert!(during > 0.0);
    std::thread::sleep(Duration::from_secs(10));
    let (second, _) = partial_count(&yaffle);
    assert!(second > first, "shard 1 rows kept landing during the outage ({first} then {second})");
    let strict = std::process::Command::new(BIN)
        .args(["query", "SELECT count() FROM points"])
        .env("YAFFLE_CONFIG", dir.path().join("yaffle.toml"))
        .env("YAFFLE_STORE__CLICKHOUSE__ON_MISSING_SHARD", "fail")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success() && stderr.contains("shard 2"), "strict read fails naming shard 2: {stderr}");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    assert_eq!(load.refused(), 0, "ingest refused writes while shard 2 was down");
    cluster(&["start"]);

    std::thread::sleep(Duration::from_secs(2));
    let acked = load.stop();
    wait_count(&yaffle, acked.len(), Duration::from_secs(90));
    sync_replicas("shard", "points_local");
    assert_eq!(count(&yaffle), acked.len() as u64, "stored rows vs acknowledged points after the shard returned");
    assert_exactly_once(&yaffle, ROWS, &acked);
    assert_eq!((cursors("kafka"), cursors("alert")), (kafka, alert), "the other sinks' cursors were not touched");
    assert_eq!(promql_count(&yaffle), (acked.len() as f64, vec![]), "PromQL counts every acknowledged point");
}

/// Every `load_seq` sample, counted with PromQL (the load's timestamps are nanoseconds after 1970),
/// and the answer's warnings.
fn promql_count(y: &Yaffle) -> (f64, Vec<String>) {
    let query = "sum(count_over_time(load_seq[1h]))";
    let mut r = agent()
        .get(&y.url("/api/v1/query"))
        .query("query", query)
        .query("time", "3600")
        .query("db", "ch")
        .call()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let value = body["data"]["result"][0]["value"][1].as_str().unwrap_or("0").parse().unwrap();
    let warnings = body["warnings"].as_array().map(|w| w.iter().map(|v| v.as_str().unwrap().to_string()).collect());
    (value, warnings.unwrap_or_default())
}

/// `count()` through a partial read, and the warning header.
fn partial_count(y: &Yaffle) -> (u64, String) {
    let mut r = agent().post(&y.url("/api/v1/sql")).send("SELECT count() AS n FROM points").unwrap();
    let warning = r.headers().get("x-yaffle-warning").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    (rows[0]["n"].as_u64().unwrap(), warning)
}
