//! The ClickHouse store: a cluster of shards x replicas.
//!
//! # Layout
//! Each shard has `points_local` and `rollups_local` (ReplicatedMergeTree / ReplicatedReplacingMergeTree,
//! replicated through ZooKeeper or ClickHouse Keeper), and every node has the Distributed tables
//! `points` and `rollups` over them, sharded by the `route` column. The DDL depends on the server
//! version ([`ddl`]); [`ClickHouseStore::init`] runs it `ON CLUSTER`, idempotently.
//!
//! # Placement
//! Every row carries its **route**, computed by the configured distribution strategy
//! ([`yaffle_core::strategy`]). The Distributed tables shard by that column, and Yaffle's writer
//! sends each row to shard `route % shards` itself, straight into that shard's local table: so what
//! a read through `points` sees is where the writer put it, and a query about one series (or one
//! measurement, under the `measurement` strategy) can go to a single shard ([`ClickHouseStore::query_shard`]).
//!
//! # Writes that survive faults, without duplicates
//! [`ClickHouseStore::insert`] writes one [`Block`] to a shard: to the replica that last worked, and on
//! failure to the others in turn. Retries never duplicate rows because a block is **deterministic**:
//! its RowBinary bytes are a pure function of the log range it was built from, and the writer records
//! that range before the first attempt (see the ingest crate's ClickHouse sink). ReplicatedMergeTree
//! keeps the hashes of recent blocks per shard in ZooKeeper and silently drops a block it has already
//! stored, whichever replica it reaches. So an insert that timed out but landed, retried on the other
//! replica or after a crash, is stored once. Insert tokens (`insert_deduplication_token`) would do the
//! same but need ClickHouse 22.2; deterministic blocks work on every version, including Debian's 18.16.
//! A block stays below `max_insert_block_size` (1,048,576 rows) so the server never splits it.
//!
//! # Reads
//! SQL runs on any live node against the Distributed tables; ClickHouse itself skips dead replicas.
//! When every replica of a shard is down the answer would be partial: by
//! [`MissingShard`] the query fails naming the shard, or answers from the others with a warning that
//! names it.

#[cfg(test)]
mod cluster_tests;
mod config;
pub mod ddl;
mod json;
mod rows;
mod select;
#[cfg(any(test, feature = "test-cluster"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use yaffle_core::ErrorStatus;

use tokio::sync::OnceCell;
use yaffle_core::Point;
use yaffle_core::strategy::Distribution;

pub use config::{ClickHouseConfig, MissingShard};
pub use ddl::{Ddl, ServerVersion};
pub(crate) use rows::varint;
pub use rows::{Block, BlockBuilder};

use crate::{QueryResult, RollupRow, Store, StoreError};

/// A ClickHouse cluster as a Yaffle store.
#[derive(Debug)]
pub struct ClickHouseStore {
    config: ClickHouseConfig,
    distribution: Distribution,
    shards: Vec<Shard>,
    version: OnceCell<ServerVersion>,
}

#[derive(Debug)]
struct Shard {
    replicas: Vec<Replica>,
    /// The replica that answered last; tried first.
    preferred: AtomicUsize,
}

#[derive(Debug)]
struct Replica {
    url: String,
    client: clickhouse::Client,
}

/// Every replica of a shard failed an insert.
#[derive(Debug, thiserror::Error)]
#[error("shard {shard}: every replica failed: {}", .errors.join("; "))]
pub struct InsertError {
    /// The shard, numbered from 1 like ClickHouse's `shard_num`.
    pub shard: usize,
    /// `url: error` per replica tried.
    pub errors: Vec<String>,
}

impl ClickHouseStore {
    /// A store for the configured cluster. Nothing is contacted yet, so ingest starts while the
    /// cluster is down; [`ClickHouseStore::init`] and every operation reach it when they run.
    pub fn new(config: &ClickHouseConfig) -> Result<Self, StoreError> {
        let distribution = config.validate().map_err(StoreError::Config)?;
        let shards = config
            .shards
            .iter()
            .map(|urls| Shard {
                replicas: urls
                    .iter()
                    .map(|url| Replica {
                        url: url.clone(),
                        client: clickhouse::Client::default()
                            .with_url(url)
                            .with_user(&config.user)
                            .with_password(&config.password)
                            .with_validation(false),
                    })
                    .collect(),
                preferred: AtomicUsize::new(0),
            })
            .collect();
        Ok(Self { config: config.clone(), distribution, shards, version: OnceCell::new() })
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The distribution that places rows on shards.
    pub fn distribution(&self) -> &Distribution {
        &self.distribution
    }

    /// The route of a point and the shard (0-based) it belongs to.
    pub fn place(&self, point: &Point) -> (u64, usize) {
        let route = self.distribution.route(&point.series, point.series_id);
        (route, Distribution::target(route, self.shards.len()))
    }

    /// HTTP URLs of a shard's replicas.
    pub fn replica_urls(&self, shard: usize) -> Vec<&str> {
        self.shards[shard].replicas.iter().map(|r| r.url.as_str()).collect()
    }

    /// The server version (asked once, of the first node that answers).
    pub async fn version(&self) -> Result<ServerVersion, StoreError> {
        self.version
            .get_or_try_init(|| async {
                let v: String = self.any_node("SELECT version()").await?;
                ServerVersion::parse(&v).ok_or_else(|| StoreError::Execution(format!("unknown server version {v:?}")))
            })
            .await
            .copied()
    }

    /// Checks the cluster's shape against the configuration and creates the database and tables
    /// (`ON CLUSTER`, idempotent). Safe to run at every start.
    pub async fn init(&self) -> Result<(), StoreError> {
        let version = self.version().await?;
        let c = &self.config;
        let shape: (u64, u64, u64) = self
            .any_node(&format!(
                "SELECT toUInt64(count(DISTINCT shard_num)), toUInt64(min(shard_weight)), toUInt64(max(shard_weight)) \
                 FROM system.clusters \
                 WHERE cluster = '{}'",
                c.cluster
            ))
            .await?;
        if shape.0 as usize != self.shards.len() {
            return Err(StoreError::Config(format!(
                "cluster {:?} has {} shards on the server, store.clickhouse.shards lists {}",
                c.cluster,
                shape.0,
                self.shards.len()
            )));
        }
        if (shape.1, shape.2) != (1, 1) {
            return Err(StoreError::Config(format!(
                "cluster {:?}: every shard needs weight 1 so that Yaffle and the Distributed tables place rows alike",
                c.cluster
            )));
        }
        let ddl = Ddl { version, cluster: &c.cluster, database: &c.database, retention: &c.retention };
        for statement in ddl.statements() {
            self.execute_any(&statement).await?;
        }
        tracing::info!(version = %format!("{}.{}", version.major, version.minor), modern = version.is_modern(),
            database = %c.database, cluster = %c.cluster, "clickhouse schema ready");
        Ok(())
    }

    /// Inserts a block into shard `shard`'s `points_local`: the preferred replica first, then the
    /// others. Returns the URL of the replica that took it.
    pub async fn insert(&self, shard: usize, block: &Block) -> Result<&str, InsertError> {
        self.insert_into(shard, "points_local", ddl::POINTS_COLUMNS, block, &[]).await
    }

    async fn insert_into(
        &self,
        shard: usize,
        table: &str,
        columns: &str,
        block: &Block,
        settings: &[(&str, &str)],
    ) -> Result<&str, InsertError> {
        let s = &self.shards[shard];
        let n = s.replicas.len();
        let first = s.preferred.load(Ordering::Relaxed);
        let sql = format!("INSERT INTO {}.{table} ({columns}) FORMAT RowBinary", self.config.database);
        let mut errors = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            let r = &s.replicas[i];
            let t = Some(self.config.insert_timeout);
            let mut client = r.client.clone();
            for (k, v) in settings {
                client = client.with_setting(*k, *v);
            }
            let mut insert = client.insert_formatted_with(sql.clone()).with_timeouts(t, t);
            let attempt = async {
                insert.send(block.data.clone()).await?;
                insert.end().await
            };
            // The client's own timeouts do not cover every phase: bound the whole attempt too.
            let result = match tokio::time::timeout(self.config.insert_timeout, attempt).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.config.insert_timeout)),
            };
            match result {
                Ok(()) => {
                    s.preferred.store(i, Ordering::Relaxed);
                    return Ok(&r.url);
                }
                Err(e) => {
                    tracing::warn!(shard = shard + 1, replica = %r.url, table, error = %e, "insert failed");
                    errors.push(format!("{}: {e}", r.url));
                }
            }
        }
        Err(InsertError { shard: shard + 1, errors })
    }

    /// Runs a mutation on shard `shard` (one replica runs it, replication carries it to the others) and
    /// waits until every reachable replica has applied it.
    async fn mutate_shard(&self, shard: usize, table: &str, sql: &str) -> Result<(), StoreError> {
        let mut errors = Vec::new();
        let mut done = false;
        for r in &self.shards[shard].replicas {
            match r.client.query(sql).execute().await.map_err(|e| classify(&r.url, e)) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(StoreError::Unavailable(e)) => errors.push(e),
                Err(e) => return Err(e),
            }
        }
        if !done {
            return Err(StoreError::Unavailable(format!("shard {}: {}", shard + 1, errors.join("; "))));
        }
        let pending = format!(
            "SELECT toUInt64(count()) FROM system.mutations WHERE database = '{}' AND table = '{table}' AND is_done = 0",
            self.config.database
        );
        let deadline = tokio::time::Instant::now() + self.config.ddl_timeout;
        for r in &self.shards[shard].replicas {
            loop {
                match r.client.query(&pending).fetch_one::<u64>().await {
                    Ok(0) | Err(_) => break, // done, or the replica is down and catches up when back
                    Ok(_) if tokio::time::Instant::now() > deadline => {
                        return Err(StoreError::Execution(format!(
                            "{}: the mutation did not finish within {:?}: {sql}",
                            r.url, self.config.ddl_timeout
                        )));
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    fn chosen(&self, shards: &[usize]) -> Vec<usize> {
        if shards.is_empty() { (0..self.shards.len()).collect() } else { shards.to_vec() }
    }

    /// Runs SQL on one replica of one shard (0-based), e.g. against `points_local`.
    pub async fn query_shard(&self, shard: usize, sql: &str) -> Result<QueryResult, StoreError> {
        let mut last = None;
        for r in &self.shards[shard].replicas {
            match self.fetch(r, sql, false).await {
                Ok(result) => return Ok(result),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Unavailable(format!("shard {} has no replica", shard + 1))))
    }

    async fn fetch(&self, replica: &Replica, sql: &str, skip_unavailable: bool) -> Result<QueryResult, StoreError> {
        let sql = sql.trim().trim_end_matches(';');
        let limits = &self.config.query;
        let mut query = replica
            .client
            .query_raw(sql)
            .with_setting("database", self.config.database.as_str())
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .with_setting("max_execution_time", limits.timeout.as_secs().max(1).to_string())
            .with_setting("max_memory_usage", limits.max_memory.as_u64().to_string())
            .with_setting("max_result_rows", limits.max_result_rows.to_string())
            .with_setting("result_overflow_mode", "throw")
            .with_setting("readonly", "1");
        if skip_unavailable {
            query = query.with_setting("skip_unavailable_shards", "1");
        }
        let body = async { query.fetch_bytes("JSONCompact")?.collect().await };
        match body.await {
            Ok(body) => json::to_result(&body),
            Err(e) => Err(classify(&replica.url, e)),
        }
    }

    /// Shards (0-based) none of whose replicas answers.
    async fn missing_shards(&self) -> Vec<usize> {
        let mut missing = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            let mut up = false;
            for r in &s.replicas {
                let ping = r.client.query("SELECT 1").fetch_one::<u8>();
                if matches!(tokio::time::timeout(Duration::from_secs(2), ping).await, Ok(Ok(1))) {
                    up = true;
                    break;
                }
            }
            if !up {
                missing.push(i);
            }
        }
        missing
    }

    fn describe_shards(&self, shards: &[usize]) -> String {
        shards
            .iter()
            .map(|&i| format!("shard {} ({})", i + 1, self.replica_urls(i).join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn nodes(&self) -> impl Iterator<Item = &Replica> {
        self.shards.iter().flat_map(|s| &s.replicas)
    }

    /// Runs a query on the first node that is reachable.
    async fn fetch_any(&self, sql: &str, skip_unavailable: bool) -> Result<QueryResult, StoreError> {
        let mut errors = Vec::new();
        for r in self.nodes() {
            match self.fetch(r, sql, skip_unavailable).await {
                Err(StoreError::Unavailable(e)) => errors.push(e),
                other => return other,
            }
        }
        Err(no_node(errors))
    }

    async fn any_node<T>(&self, sql: &str) -> Result<T, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let mut errors = Vec::new();
        for r in self.nodes() {
            match r.client.query_raw(sql).fetch_one::<T>().await.map_err(|e| classify(&r.url, e)) {
                Err(StoreError::Unavailable(e)) => errors.push(e),
                other => return other,
            }
        }
        Err(no_node(errors))
    }

    async fn execute_any(&self, sql: &str) -> Result<(), StoreError> {
        let timeout = self.config.ddl_timeout.as_secs().max(1).to_string();
        let mut errors = Vec::new();
        for r in self.nodes() {
            let q = r.client.query_raw(sql).with_setting("distributed_ddl_task_timeout", timeout.as_str());
            match q.execute().await.map_err(|e| classify(&r.url, e)) {
                Err(StoreError::Unavailable(e)) => errors.push(e),
                other => return other,
            }
        }
        Err(no_node(errors))
    }

    /// Partitions of `table` on every reachable shard: `(partition_id, partition)`.
    async fn partitions(&self, table: &str) -> Vec<(String, String)> {
        let sql = format!(
            "SELECT DISTINCT partition_id, partition FROM system.parts WHERE database = '{}' AND table = '{table}' AND active",
            self.config.database
        );
        let mut all = Vec::new();
        for s in &self.shards {
            for r in &s.replicas {
                if let Ok(rows) = r.client.query_raw(&sql).fetch_all::<(String, String)>().await {
                    all.extend(rows);
                    break;
                }
            }
        }
        all.sort();
        all.dedup();
        all
    }
}

fn no_node(errors: Vec<String>) -> StoreError {
    StoreError::Unavailable(format!("no ClickHouse node answers: {}", errors.join("; ")))
}

/// Maps a client error to a store error: unreachable nodes are [`StoreError::Unavailable`], server
/// exceptions about the statement are the caller's fault.
fn classify(url: &str, e: clickhouse::error::Error) -> StoreError {
    use clickhouse::error::Error;
    match e {
        Error::BadResponse(text) => {
            let code = text
                .split("Code: ")
                .nth(1)
                .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|c| c.parse::<u32>().ok());
            let text = text.trim().to_string();
            match code {
                // Syntax, unknown identifier/table/function/setting, type mismatch, readonly, bad arguments.
                Some(62 | 47 | 60 | 46 | 115 | 53 | 164 | 43 | 42 | 36 | 48 | 81 | 386) => {
                    StoreError::InvalidQuery(text)
                }
                // Every replica of a shard unreachable.
                Some(279) => StoreError::ShardsUnavailable(text),
                // Timeout, too many rows, memory limit: store.clickhouse.query.
                Some(159 | 158 | 396 | 241) => StoreError::QueryLimit(format!("{text} (store.clickhouse.query)")),
                _ => StoreError::Execution(format!("{url}: {text}")),
            }
        }
        Error::Network(_) | Error::TimedOut => StoreError::Unavailable(format!("{url}: {e}")),
        other => StoreError::Execution(format!("{url}: {other}")),
    }
}

#[async_trait::async_trait]
impl Store for ClickHouseStore {
    async fn write_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError> {
        let mut by_shard: Vec<Vec<(&RollupRow, u64)>> = vec![Vec::new(); self.shards.len()];
        for r in rows {
            let route = self.distribution.route(&r.series, r.series_id);
            by_shard[Distribution::target(route, self.shards.len())].push((r, route));
        }
        for (shard, rows) in by_shard.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let block = rows::rollup_block(rows);
            self.insert_into(shard, "rollups_local", ddl::ROLLUP_COLUMNS, &block, &[])
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    async fn delete_points(&self, from_ns: i64, to_ns: i64, shards: &[usize]) -> Result<(), StoreError> {
        let sql = format!(
            "ALTER TABLE {}.points_local DELETE WHERE time_ns >= {from_ns} AND time_ns < {to_ns}",
            self.config.database
        );
        for shard in self.chosen(shards) {
            self.mutate_shard(shard, "points_local", &sql).await?;
        }
        Ok(())
    }

    /// Inserted with `insert_deduplicate = 0`: a rebuild run twice must write its rows again after
    /// its delete, not have them dropped as blocks already seen.
    async fn append_points(&self, points: &[Point], shards: &[usize]) -> Result<u64, StoreError> {
        let chosen = self.chosen(shards);
        let mut builders: Vec<BlockBuilder> = (0..self.shards.len()).map(|_| BlockBuilder::default()).collect();
        let mut written = 0;
        for p in points {
            let (route, shard) = self.place(p);
            if chosen.contains(&shard) {
                builders[shard].push(p, route);
                written += 1;
            }
        }
        for (shard, mut builder) in builders.into_iter().enumerate().filter(|(_, b)| b.rows() > 0) {
            self.insert_into(
                shard,
                "points_local",
                ddl::POINTS_COLUMNS,
                &builder.finish(),
                &[("insert_deduplicate", "0")],
            )
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        Ok(written)
    }

    async fn select_series(&self, select: &crate::SeriesSelect) -> Result<crate::Selected, StoreError> {
        self.select(select).await
    }

    async fn query(&self, sql: &str) -> Result<QueryResult, StoreError> {
        let start = self.fetch_any(sql, false).await;
        let Err(StoreError::ShardsUnavailable(cause)) = start else {
            return start;
        };
        let missing = self.missing_shards().await;
        if missing.is_empty() {
            return Err(StoreError::Execution(cause));
        }
        let which = self.describe_shards(&missing);
        match self.config.on_missing_shard {
            MissingShard::Fail => Err(StoreError::Unavailable(format!(
                "{which} unavailable: no replica answers, so the answer would be partial \
                 (store.clickhouse.on_missing_shard = \"partial\" answers from the other shards)"
            ))),
            MissingShard::Partial => {
                let mut result = self.fetch_any(sql, true).await?;
                result.warnings.push(format!("partial result: {which} unavailable"));
                Ok(result)
            }
        }
    }

    /// On modern servers TTL does this and nothing is dropped here. On old ones, drops whole
    /// partitions past retention: a day of points, a month of rollups of one resolution.
    async fn enforce_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        if self.version().await?.is_modern() {
            return Ok(0);
        }
        let now = now_ns / 1_000_000_000;
        let r = &self.config.retention;
        let mut dropped = 0;
        for (table, keep_for) in [("points_local", None), ("rollups_local", Some(()))] {
            for (id, partition) in self.partitions(table).await {
                let expired = match keep_for {
                    None => r.points.zip(partition_end(&partition, false)),
                    Some(()) => rollup_partition(&partition)
                        .and_then(|(res, end)| r.rollups_of(Duration::from_secs(res)).map(|keep| (keep, end))),
                }
                .is_some_and(|(keep, end)| end + keep.as_secs() as i64 <= now);
                if expired {
                    let sql = format!(
                        "ALTER TABLE {}.{table} ON CLUSTER {} DROP PARTITION ID '{id}'",
                        self.config.database, self.config.cluster
                    );
                    self.execute_any(&sql).await?;
                    tracing::info!(table, partition = %partition, "dropped a partition past retention");
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }
}

/// The end (unix seconds) of a `YYYYMMDD` (or, for `month`, `YYYYMM`) partition.
fn partition_end(partition: &str, month: bool) -> Option<i64> {
    use chrono::{Months, NaiveDate};
    let p = partition.trim_matches('\'');
    let next = if month {
        NaiveDate::parse_from_str(&format!("{p}01"), "%Y%m%d").ok()?.checked_add_months(Months::new(1))?
    } else {
        NaiveDate::parse_from_str(p, "%Y%m%d").ok()?.succ_opt()?
    };
    Some(next.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

/// `(resolution seconds, end)` of a rollups partition `(60,202611)`.
fn rollup_partition(partition: &str) -> Option<(u64, i64)> {
    let (res, month) = partition.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
    Some((res.trim().parse().ok()?, partition_end(month.trim(), true)?))
}
