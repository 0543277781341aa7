//! ClickHouse backend configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use yaffle_core::strategy::{Distribution, DistributionConfig};

use crate::{QueryLimits, Retention};

/// What a read does when every replica of a shard is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingShard {
    /// Fail the query with an error naming the missing shards.
    #[default]
    Fail,
    /// Answer from the other shards and say which are missing (`X-Yaffle-Warning`, stderr for the CLI).
    Partial,
}

/// How Yaffle reaches and lays out a ClickHouse cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The cluster name in the servers' `remote_servers` (used by `ON CLUSTER` and the Distributed tables).
    pub cluster: String,
    /// Database holding Yaffle's tables.
    pub database: String,
    /// HTTP URLs of every replica, one list per shard, shards in the order of `remote_servers`.
    /// Every shard must have weight 1, so that shard `i` holds the rows whose route is `i` modulo the
    /// number of shards, in ClickHouse's Distributed table as in Yaffle's writer.
    pub shards: Vec<Vec<String>>,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// What a read does when a whole shard is down.
    pub on_missing_shard: MissingShard,
    /// Longest an insert may take before the replica is considered failed.
    #[serde(with = "humantime_serde")]
    pub insert_timeout: Duration,
    /// Longest `ON CLUSTER` DDL waits for every host (`distributed_ddl_task_timeout`). Hosts that are down
    /// run the queued DDL when they return.
    #[serde(with = "humantime_serde")]
    pub ddl_timeout: Duration,
    /// Retention; on servers with TTL (20.x and later) it becomes table TTLs, otherwise old partitions
    /// are dropped by the periodic retention check.
    pub retention: Retention,
    /// Which shard each series goes to.
    pub distribution: DistributionConfig,
    /// Bounds on each SQL query, passed to ClickHouse as `max_execution_time`, `max_memory_usage` and
    /// `max_result_rows` (with `result_overflow_mode = 'throw'`); queries run with `readonly = 1`
    /// (no SET, no table functions such as `url()`).
    pub query: QueryLimits,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            cluster: "yaffle".into(),
            database: "yaffle".into(),
            shards: vec![vec!["http://127.0.0.1:8123".into()]],
            user: "default".into(),
            password: String::new(),
            on_missing_shard: MissingShard::Fail,
            insert_timeout: Duration::from_secs(30),
            ddl_timeout: Duration::from_secs(60),
            retention: Retention::default(),
            distribution: DistributionConfig::default(),
            query: QueryLimits::default(),
        }
    }
}

impl ClickHouseConfig {
    /// Checks what serde cannot, returning the distribution to route with.
    pub fn validate(&self) -> Result<Distribution, String> {
        if self.shards.is_empty() || self.shards.iter().any(Vec::is_empty) {
            return Err("store.clickhouse.shards: every shard needs at least one replica URL".into());
        }
        for url in self.shards.iter().flatten() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("store.clickhouse.shards: {url:?} is not an http(s) URL"));
            }
        }
        for (what, name) in [("cluster", &self.cluster), ("database", &self.database)] {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("store.clickhouse.{what}: {name:?} must be letters, digits and '_'"));
            }
        }
        self.retention.validate().map_err(|e| format!("store.clickhouse.{e}"))?;
        Distribution::new(&self.distribution).map_err(|e| format!("store.clickhouse.{e}"))
    }
}
