//! ClickHouse sink throughput against the `clickhouse` crate's plain `Inserter`, side by side in one run,
//! on the real 2x2 cluster of `scripts/clickhouse-cluster` (started if needed).
//!
//! Both write the same rows (TSBS cpu-only shape: 10 float fields per point, one row per field) and both
//! finish only when the rows are on their shards:
//! - **sink**: Yaffle's ClickHouse sink reading the durable log (RowBinary blocks built from points,
//!   one writer per shard, straight into the shards' local tables);
//! - **inserter**: `Client::inserter` of a row struct into the Distributed table on one node with
//!   `insert_distributed_sync=1` (so the rows are on the shards when it returns), 500 000 rows per insert.
//!
//! Reports rows/s and the ClickHouse servers' CPU seconds (user + system, all four nodes, from /proc) per
//! million rows. Run: `cargo bench -p yaffle-ingest --bench clickhouse_sink` (release build), or
//! `cargo test --workspace --bench clickhouse_sink` to reuse the test build (unoptimised Yaffle code).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use yaffle_core::tsbs::FIELDS;
use yaffle_core::{Batch, Point};
use yaffle_ingest::Metrics;
use yaffle_ingest::sinks::clickhouse::{ClickHouseSink, ClickHouseSinkConfig};
use yaffle_log::{CursorName, Log, LogConfig};
use yaffle_store::clickhouse::ClickHouseStore;
use yaffle_store::clickhouse::testing::fresh_config;

#[path = "support/points.rs"]
mod shared;
use shared::points;

const ROUNDS: usize = 3;

/// CPU seconds used so far by the four ClickHouse servers.
fn server_cpu_seconds() -> f64 {
    let dir = std::env::var("YAFFLE_CLICKHOUSE_DIR").unwrap_or_else(|_| "/tmp/yaffle-clickhouse".into());
    let ticks = 100.0; // USER_HZ on Linux
    (1..=4)
        .filter_map(|n| std::fs::read_to_string(format!("{dir}/node{n}/pid")).ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok())
        .map(|stat| {
            let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = after_comm.split(' ').collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks
        })
        .sum()
}

#[derive(clickhouse::Row, Serialize)]
struct PlainRow {
    route: u64,
    time_ns: i64,
    database: String,
    measurement: String,
    series_id: u64,
    series_key: String,
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
    field: String,
    value: Option<f64>,
    value_int: Option<i64>,
    value_uint: Option<u64>,
    value_bool: Option<u8>,
    value_str: Option<String>,
}

async fn run_inserter(points: &[Point]) -> (f64, f64) {
    let config = fresh_config("bench_inserter");
    let store = ClickHouseStore::new(&config).unwrap();
    store.init().await.unwrap();
    let client = clickhouse::Client::default()
        .with_url(&config.shards[0][0])
        .with_database(&config.database)
        .with_validation(false)
        .with_setting("insert_distributed_sync", "1");
    let (cpu, start) = (server_cpu_seconds(), Instant::now());
    let mut inserter = client.inserter::<PlainRow>("points").with_max_rows(500_000);
    for p in points {
        let (route, _) = store.place(p);
        for (field, value) in &p.fields {
            let row = PlainRow {
                route,
                time_ns: p.timestamp,
                database: p.series.database().to_string(),
                measurement: p.series.measurement().to_string(),
                series_id: p.series_id.0,
                series_key: p.series.to_string(),
                tag_keys: p.series.tags().map(|(k, _)| k.to_string()).collect(),
                tag_values: p.series.tags().map(|(_, v)| v.to_string()).collect(),
                field: field.clone(),
                value: value.as_f64(),
                value_int: None,
                value_uint: None,
                value_bool: None,
                value_str: None,
            };
            inserter.write(&row).await.unwrap();
        }
        inserter.commit().await.unwrap();
    }
    inserter.end().await.unwrap();
    (start.elapsed().as_secs_f64(), server_cpu_seconds() - cpu)
}

async fn run_sink(points: &[Point]) -> (f64, f64) {
    let config = fresh_config("bench_sink");
    let store = Arc::new(ClickHouseStore::new(&config).unwrap());
    store.init().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), &LogConfig::default(), Default::default()).unwrap());
    for chunk in points.chunks(1_000) {
        log.append(Batch::new(chunk.to_vec()).encode()).await.unwrap();
    }
    let end = log.end();
    let sink_config =
        ClickHouseSinkConfig { flush_interval: Duration::from_millis(200), ..ClickHouseSinkConfig::default() };
    let (stop, stopped) = watch::channel(false);
    let (cpu, start) = (server_cpu_seconds(), Instant::now());
    let sink =
        ClickHouseSink::new(Arc::clone(&log), store, sink_config, Arc::new(Metrics::default()), dir.path().join("ch"));
    let tasks =
        sink.spawn(&yaffle_log::sink::Supervisor::new(&mut prometheus_client::registry::Registry::default()), stopped);
    while log.cursor_position(CursorName::Store) < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = (start.elapsed().as_secs_f64(), server_cpu_seconds() - cpu);
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    result
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let points = points();
    let rows = (points.len() * FIELDS.len()) as f64;
    println!("clickhouse_sink: {} points, {rows} rows per run, {ROUNDS} rounds alternating", points.len());
    let (mut sink, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(runtime.block_on(run_inserter(&points)));
        sink.push(runtime.block_on(run_sink(&points)));
    }
    let median = |v: &mut Vec<(f64, f64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let (s, p) = (median(&mut sink), median(&mut plain));
    for (name, (secs, cpu)) in [("yaffle sink", s), ("plain Inserter", p)] {
        println!(
            "{name:>15}: {:>9.0} rows/s, {:.2} server CPU s per million rows (median of {ROUNDS}: {secs:.2} s)",
            rows / secs,
            cpu / rows * 1e6
        );
    }
    println!("ratio: sink is {:.2}x the plain Inserter's rows/s", p.0 / s.0);
}
