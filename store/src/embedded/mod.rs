//! The embedded store: Parquet files partitioned by time, queried with DataFusion.
//!
//! # Layout
//!
//! ```text
//! <dir>/_commit.json                              last committed log position and the files it made
//! <dir>/points/<partition start>/part-<position>.parquet
//! <dir>/points/<partition start>/part-<time>-<pid>-<n>.parquet     points of a rebuild from Kafka
//! <dir>/rollups/<resolution>s/<partition start>/part-<time>-<pid>-<n>.parquet
//! ```
//!
//! Rollup files are only ever added; SQL's `rollups` is a view of the highest `version` of each
//! (series, field, resolution, window), over the table `rollup_versions` that holds every row written.
//!
//! A partition directory is named by its start in UTC (`20261122T000000Z`) and spans
//! [`EmbeddedConfig::partition`]. Every write makes at most one file per partition it touches, named
//! by the log position it ends at.
//!
//! # Commit protocol
//!
//! A write is atomic and carries its log position (see [`crate::Store`]):
//! 1. each file is written as `*.parquet.tmp` and fsynced (queries only read `*.parquet`);
//! 2. `_commit.json` (position and file list) is replaced atomically (write, fsync, rename, fsync dir):
//!    this is the commit point;
//! 3. the temporary files are renamed into place.
//!
//! On open, files named in `_commit.json` that are still temporary are renamed (the crash happened
//! after the commit point) and every other temporary file is deleted (it happened before). Queries that
//! run during step 3 may miss the newest write for a moment, never see half of a file.
//!
//! # Limits
//! Each write makes a new file; a flush interval of seconds gives thousands of files a day per
//! partition. There is no compaction yet, so keep the store sink's flush interval in seconds, not
//! milliseconds, for long-running stores. A query racing with retention may fail with a missing file.

mod files;
mod select;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::SchedulingType;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};
use yaffle_core::Point;

use crate::query::QueryRuntime;
use crate::rollups::{ROLLUPS_TABLE, RollupRow, rollups_schema};
use crate::schema::{POINTS_TABLE, points_schema};
use crate::{PositionedStore, QueryLimits, QueryResult, Retention, Store, StoreError};

/// Every rollup row written, all versions (`rollups` shows the latest of each key).
const ROLLUP_VERSIONS: &str = "rollup_versions";

const LATEST_ROLLUPS: &str = "SELECT time, resolution_s, database, measurement, series_id, series_key, tags, field, \
     count, sum, min, max, first, last, first_ns, last_ns, sketch, version FROM (\
     SELECT *, row_number() OVER (PARTITION BY series_id, field, resolution_s, time ORDER BY version DESC) AS latest \
     FROM rollup_versions) WHERE latest = 1";

/// Configuration of the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Directory of the store, relative to the data directory unless absolute.
    pub dir: PathBuf,
    /// Width of a time partition: the unit retention drops.
    #[serde(with = "humantime_serde")]
    pub partition: Duration,
    /// Retention per table.
    pub retention: Retention,
    /// Bounds on each SQL query.
    pub query: QueryLimits,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("store"),
            partition: Duration::from_secs(86_400),
            retention: Retention::default(),
            query: QueryLimits::default(),
        }
    }
}

impl EmbeddedConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let secs = self.partition.as_secs();
        if secs == 0
            || self.partition.subsec_nanos() != 0
            || !86_400u64.is_multiple_of(secs) && !secs.is_multiple_of(86_400)
        {
            return Err(format!(
                "store.embedded.partition must be a whole number of seconds that divides or is a multiple of a day, got {}",
                humantime::format_duration(self.partition)
            ));
        }
        Ok(())
    }
}

/// The embedded Parquet store.
pub struct EmbeddedStore {
    files: files::Files,
    retention: Retention,
    limits: QueryLimits,
    queries: Arc<QueryRuntime>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("files", &self.files)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store at `config.dir` under `data_dir`, finishing or rolling back a
    /// write that a crash interrupted.
    pub async fn open(data_dir: &Path, config: &EmbeddedConfig) -> Result<Self, StoreError> {
        config.validate().map_err(|e| StoreError::Corrupt { path: "config".into(), reason: e })?;
        let root = data_dir.join(&config.dir);
        let partition_ns = config.partition.as_nanos() as i64;
        let files = tokio::task::spawn_blocking(move || files::Files::open(root, partition_ns))
            .await
            .expect("store open task panicked")?;
        Self::with_files(files, config).await
    }

    /// Opens an existing store for queries only, touching no file: safe while a server writes to it.
    /// [`PositionedStore::write_points`] and retention must not be called on it.
    pub async fn open_read_only(data_dir: &Path, config: &EmbeddedConfig) -> Result<Self, StoreError> {
        let root = data_dir.join(&config.dir);
        if !root.join(POINTS_TABLE).is_dir() {
            return Err(StoreError::Io {
                path: root.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here: check data_dir"),
            });
        }
        Self::with_files(files::Files::read_only(root, config.partition.as_nanos() as i64), config).await
    }

    async fn with_files(files: files::Files, config: &EmbeddedConfig) -> Result<Self, StoreError> {
        let store = Self {
            files,
            retention: config.retention.clone(),
            limits: config.query.clone(),
            queries: Arc::new(QueryRuntime::new()?),
        };
        store.session().await?; // fail at open, not at the first query, if the table cannot be registered
        Ok(store)
    }

    /// A fresh session per query: DataFusion caches directory listings in its runtime, and our files
    /// change with every flush (another process may be writing), so nothing is kept between queries.
    /// Setting one up costs about a millisecond.
    async fn session(&self) -> Result<SessionContext, StoreError> {
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        // Sorts, joins and aggregations past the limit fail (DataFusion's ResourcesExhausted).
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_memory_limit(self.limits.max_memory.as_u64() as usize, 1.0)
            .build_arc()
            .map_err(|e| StoreError::Execution(e.to_string()))?;
        // Partitions are subdirectories; DataFusion ignores those by default.
        let mut config = SessionConfig::new();
        config.options_mut().execution.listing_table_ignore_subdirectory = false;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_udaf(crate::sketch::quantile_udaf());
        register_table(&ctx, POINTS_TABLE, &self.files.table_dir(POINTS_TABLE), points_schema())?;
        // `rollups`: the highest version of each key of `rollup_versions`, so rewritten rollups replace,
        // never add. (A read-only store written before rollups existed has neither.)
        let rollups = self.files.table_dir(ROLLUPS_TABLE);
        if rollups.is_dir() {
            register_table(&ctx, ROLLUP_VERSIONS, &rollups, rollups_schema())?;
            let latest = ctx.sql(LATEST_ROLLUPS).await.map_err(|e| StoreError::Execution(e.to_string()))?;
            ctx.register_table(ROLLUPS_TABLE, latest.into_view()).map_err(|e| StoreError::Execution(e.to_string()))?;
        }
        Ok(ctx)
    }
}

/// The plan with every operator's input behind a [`CooperativeExec`], so that each batch passed
/// between operators spends tokio's cooperative budget: a join that produces batches without reading
/// (a cross join) still yields, and a cancelled query stops within a few batches. DataFusion wraps
/// only the leaves.
fn cooperative(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let yields = |p: &Arc<dyn ExecutionPlan>| p.properties().scheduling_type == SchedulingType::Cooperative;
    plan.transform_up(|node| {
        if node.children().iter().all(|c| yields(c)) {
            return Ok(Transformed::no(node));
        }
        let children = node
            .children()
            .into_iter()
            .map(|c| if yields(c) { Arc::clone(c) } else { Arc::new(CooperativeExec::new(Arc::clone(c))) as _ })
            .collect();
        // A `CooperativeExec` has its input's properties.
        let keep = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
        Ok(Transformed::yes(node.replace_children(children, keep)?))
    })
    .map(|t| t.data)
}

fn register_table(
    ctx: &SessionContext,
    name: &str,
    dir: &Path,
    schema: arrow::datatypes::SchemaRef,
) -> Result<(), StoreError> {
    let url =
        ListingTableUrl::parse(format!("{}/", dir.display())).map_err(|e| StoreError::Execution(e.to_string()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
    let table = ListingTable::try_new(config).map_err(|e| StoreError::Execution(e.to_string()))?;
    ctx.register_table(name, Arc::new(table)).map_err(|e| StoreError::Execution(e.to_string()))?;
    Ok(())
}

#[async_trait::async_trait]
impl PositionedStore for EmbeddedStore {
    async fn write_points(&self, points: &[Point], position: u64) -> Result<(), StoreError> {
        self.files.write_points(points, position).await
    }

    async fn committed_position(&self) -> Result<u64, StoreError> {
        Ok(self.files.committed_position().await)
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    /// Runs on the store's query runtime within `store.embedded.query`'s limits; cancelled when the
    /// caller drops it.
    async fn query(&self, sql: &str) -> Result<QueryResult, StoreError> {
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = self
            .session()
            .await?
            .sql_with_options(sql, read_only)
            .await
            .map_err(|e| StoreError::InvalidQuery(e.to_string()))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let max_rows = self.limits.max_result_rows;
        // One row more than allowed tells a full answer from a cut one, without computing the rest.
        let df = df.limit(0, Some(max_rows.saturating_add(1))).map_err(|e| StoreError::Execution(e.to_string()))?;
        let memory = self.limits.max_memory;
        let run = async move {
            let failed = |e: DataFusionError| match e.find_root() {
                DataFusionError::ResourcesExhausted(e) => StoreError::QueryLimit(format!(
                    "the query needs more memory than store.embedded.query.max_memory ({memory}): {e}"
                )),
                _ => StoreError::Execution(e.to_string()),
            };
            let task = Arc::new(df.task_ctx());
            let plan = cooperative(df.create_physical_plan().await.map_err(failed)?).map_err(failed)?;
            datafusion::physical_plan::collect(plan, task).await.map_err(failed)
        };
        let batches = self.queries.run(self.limits.timeout, "store.embedded.query.timeout", run).await?;
        let result = QueryResult { schema, batches, warnings: Vec::new() };
        if result.num_rows() > max_rows {
            return Err(StoreError::QueryLimit(format!(
                "the answer has more than store.embedded.query.max_result_rows ({max_rows}) rows; narrow the query or add LIMIT"
            )));
        }
        Ok(result)
    }

    async fn enforce_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        self.files.enforce_retention(&self.retention, now_ns).await
    }

    async fn write_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError> {
        self.files.write_rollups(rows).await
    }

    async fn delete_points(&self, from_ns: i64, to_ns: i64, _shards: &[usize]) -> Result<(), StoreError> {
        self.files.delete_points(from_ns, to_ns).await
    }

    async fn append_points(&self, points: &[Point], _shards: &[usize]) -> Result<u64, StoreError> {
        self.files.append_points(points).await
    }

    async fn select_series(&self, select: &crate::SeriesSelect) -> Result<crate::Selected, StoreError> {
        Ok(crate::Selected { series: self.select(select).await?, warnings: Vec::new() })
    }
}
