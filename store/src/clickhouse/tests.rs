//! Tests that need no cluster. The tests on the real 2x2 cluster are in `store/tests/clickhouse`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use yaffle_core::{FieldValue, Point, SeriesKey};

use super::*;
use crate::Retention;

/// The structure of a RowBinary block, for ClickHouse's `file()` function.
const POINTS_STRUCTURE: &str = "route UInt64, time_ns Int64, database String, measurement String, series_id UInt64, \
     series_key String, tag_keys Array(String), tag_values Array(String), field String, value Nullable(Float64), \
     value_int Nullable(Int64), value_uint Nullable(UInt64), value_bool Nullable(UInt8), value_str Nullable(String)";

/// What chdb (a modern ClickHouse in-process) can run: the local tables with non-replicated engines.
fn runnable_locally(statement: &str, cluster: &str) -> Option<String> {
    if statement.contains("ENGINE = Distributed") {
        return None;
    }
    let s = statement.replace(&format!(" ON CLUSTER {cluster}"), "");
    let engine_start = s.find("ENGINE = Replicated")?;
    let args_end = engine_start + s[engine_start..].find(')')?;
    let version = s[engine_start..args_end].split(", ").nth(2).map(str::to_string);
    let engine = match version {
        Some(v) => format!("ENGINE = ReplacingMergeTree({v}"),
        None => "ENGINE = MergeTree(".to_string(),
    };
    Some(format!("{}{engine}{}", &s[..engine_start], &s[args_end..]))
}

#[test]
fn modern_ddl_runs_on_a_modern_clickhouse() {
    let mut retention = Retention { points: Some(Duration::from_secs(30 * 86_400)), ..Retention::default() };
    retention.by_resolution.insert("1m".into(), Duration::from_secs(7 * 86_400).into());
    retention.rollups = Some(Duration::from_secs(365 * 86_400));
    let ddl =
        Ddl { version: ServerVersion { major: 24, minor: 3 }, cluster: "c", database: "d", retention: &retention };
    let statements = ddl.statements();
    let mut execute = vec!["CREATE DATABASE IF NOT EXISTS d".to_string()];
    execute.extend(statements.iter().filter_map(|s| runnable_locally(s, "c")));
    assert_eq!(execute.len(), 3, "{execute:#?}");

    // One point inside retention and one long past it: TTL must drop the old one on merge.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let key = Arc::new(SeriesKey::new("db", "cpu", vec![("host".into(), "a".into())]));
    let mut block = BlockBuilder::default();
    block.push(
        &Point::new(
            Arc::clone(&key),
            vec![("f".into(), FieldValue::Float(1.5)), ("i".into(), FieldValue::Integer(-3))],
            now - 3_600_000_000_123,
        ),
        42,
    );
    block.push(
        &Point::new(Arc::clone(&key), vec![("s".into(), FieldValue::String("x".into()))], 1_700_000_000_000_000_000),
        42,
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &block.finish().data).unwrap();

    let spec = serde_json::json!({
        "format": statements,
        "execute": execute,
        "insert": ["d.points_local", POINTS_STRUCTURE, file.path()],
        "checks": [
            ["SELECT count(), sum(value_int), toInt64(toUnixTimestamp64Nano(min(time))) = min(time_ns), \
              countIf(tag_keys = ['host'] AND tag_values = ['a']) FROM d.points_local WHERE time_ns > 1700000000000000000",
             "2\t-3\t1\t2"],
            ["SELECT type FROM system.columns WHERE database = 'd' AND table = 'points_local' AND name = 'measurement'",
             "LowCardinality(String)"],
            ["SELECT countIf(engine_full LIKE '%TTL%') FROM system.tables WHERE database = 'd'", "2"],
            ["OPTIMIZE TABLE d.points_local FINAL", ""],
            ["SELECT count(), countIf(value_str = 'x') FROM d.points_local", "2\t0"],
        ],
    });
    let script = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/chdb_check.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (install the test dependencies: scripts/test-deps)");
    child.stdin.take().unwrap().write_all(spec.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "chdb rejected the modern DDL (PyPI chdb-core comes with scripts/test-deps):\n{text}"
    );
}

#[test]
fn partitions_end_where_the_next_begins() {
    assert_eq!(partition_end("20231114", false), Some(1_700_006_400));
    assert_eq!(partition_end("'20231114'", false), Some(1_700_006_400));
    assert_eq!(rollup_partition("(60,202311)"), Some((60, 1_701_388_800)));
    assert_eq!(rollup_partition("garbage"), None);
}

#[test]
fn client_errors_are_classified() {
    let e = classify(
        "u",
        clickhouse::error::Error::BadResponse("Code: 62, e.displayText() = DB::Exception: Syntax error".into()),
    );
    assert!(matches!(e, StoreError::InvalidQuery(_)), "{e}");
    let e = classify(
        "u",
        clickhouse::error::Error::BadResponse("Code: 279, e.displayText() = All connection tries failed".into()),
    );
    assert!(matches!(e, StoreError::ShardsUnavailable(_)), "{e}");
    let e = classify("u", clickhouse::error::Error::TimedOut);
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
}

#[test]
fn configs_are_validated() {
    let mut c = ClickHouseConfig { shards: vec![vec![]], ..ClickHouseConfig::default() };
    assert!(ClickHouseStore::new(&c).unwrap_err().to_string().contains("at least one replica"));
    c.shards = vec![vec!["127.0.0.1:8123".into()]];
    assert!(ClickHouseStore::new(&c).unwrap_err().to_string().contains("not an http(s) URL"));
    c.shards = vec![vec!["http://a".into()], vec!["http://b".into()]];
    let store = ClickHouseStore::new(&c).unwrap();
    let key = Arc::new(SeriesKey::new("db", "m", vec![]));
    let p = Point::new(Arc::clone(&key), vec![("v".into(), FieldValue::Float(1.0))], 0);
    assert_eq!(store.place(&p), (key.id().0, (key.id().0 % 2) as usize));
}
