//! Test support for the real 2x2 cluster of `scripts/clickhouse-cluster` (feature `test-cluster`).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::ClickHouseConfig;

/// The repository's cluster script, found from the package under test (cargo sets
/// `CARGO_MANIFEST_DIR` when it runs tests). Read at run time: a build cache shared by several clones
/// may hold this crate compiled in another one.
pub fn script() -> std::path::PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("run under cargo test");
    Path::new(&dir)
        .ancestors()
        .map(|d| d.join("scripts/clickhouse-cluster"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no scripts/clickhouse-cluster above {dir}"))
}

/// Runs the cluster script with `args`, panicking with its output when it fails.
pub fn cluster(args: &[&str]) {
    let out = Command::new(script()).args(args).output().expect("running scripts/clickhouse-cluster");
    assert!(
        out.status.success(),
        "scripts/clickhouse-cluster {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the cluster if it is not running (idempotent, fails loudly) and returns a configuration for
/// it with a database of its own, named after `test` (dropped first if a previous run left it).
pub fn fresh_config(test: &str) -> ClickHouseConfig {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| cluster(&["start"]));
    static N: AtomicU32 = AtomicU32::new(0);
    let database = format!("t_{}_{}_{}", test, std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let node = |n: u16| format!("http://127.0.0.1:{}", 28120 + n);
    ClickHouseConfig {
        database,
        shards: vec![vec![node(1), node(2)], vec![node(3), node(4)]],
        insert_timeout: std::time::Duration::from_secs(5),
        ddl_timeout: std::time::Duration::from_secs(20),
        ..ClickHouseConfig::default()
    }
}

/// Waits until every replica has fetched what its peers were given, so a read through the
/// `Distributed` tables is complete whichever replica it picks.
pub async fn sync_replicas(store: &super::ClickHouseStore) {
    for shard in &store.shards {
        for r in &shard.replicas {
            for table in ["points_local", "rollups_local"] {
                let sync = format!("SYSTEM SYNC REPLICA {}.{table}", store.config.database);
                r.client.query(&sync).execute().await.unwrap_or_else(|e| panic!("{}: {sync}: {e}", r.url));
            }
        }
    }
}
