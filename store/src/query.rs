//! Query results and their output formats.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Bounds on one SQL query (`store.embedded.query`, `store.clickhouse.query`). A query past one fails
/// with an error naming it; a query whose client went away is cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    /// Longest a query may run.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory its operators (sorts, joins, aggregations) may hold.
    pub max_memory: ByteSize,
    /// Rows the answer may have.
    pub max_result_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(60), max_memory: ByteSize::gib(1), max_result_rows: 1_000_000 }
    }
}

/// The answer to a SQL query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Column names and types (also for an empty answer).
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
    /// Why the answer may be incomplete (e.g. a ClickHouse shard that did not answer); empty when whole.
    pub warnings: Vec<String>,
}

/// A runtime of its own for running queries, so that a CPU-heavy one never delays the writes on the
/// server's runtime. Dropping it stops what still runs there without waiting (a runaway query never
/// holds up shutdown).
pub(crate) struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    /// A runtime with a worker per core, named `yaffle-query`.
    pub(crate) fn new() -> Result<Self, crate::StoreError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("yaffle-query")
            .enable_all()
            .build()
            .map_err(|e| crate::StoreError::Execution(format!("cannot start the query runtime: {e}")))?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `query` there for at most `limits.timeout` (named `setting` in the error). It is cancelled
    /// when the timeout passes and when the returned future is dropped (the client went away).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        setting: &str,
        query: impl Future<Output = Result<T, crate::StoreError>> + Send + 'static,
    ) -> Result<T, crate::StoreError> {
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let task = self.0.as_ref().expect("running until dropped").spawn(query);
        let _abort = AbortOnDrop(task.abort_handle());
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(crate::StoreError::Execution(format!("query task failed: {e}"))),
            Err(_) => Err(crate::StoreError::QueryLimit(format!(
                "the query ran longer than {setting} ({}) and was cancelled",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryRuntime")
    }
}

/// How a result is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A JSON array of objects, one per row, nulls explicit.
    #[default]
    Json,
    /// CSV with a header line.
    Csv,
    /// A human-readable table.
    Table,
}

impl OutputFormat {
    /// Parses `json`, `csv` or `table`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "json" => OutputFormat::Json,
            "csv" => OutputFormat::Csv,
            "table" => OutputFormat::Table,
            _ => return None,
        })
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Table => "text/plain; charset=utf-8",
        }
    }
}

impl QueryResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Renders the result.
    pub fn render(&self, format: OutputFormat) -> Result<Vec<u8>, arrow::error::ArrowError> {
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        let mut out = Vec::new();
        match format {
            OutputFormat::Json => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(&mut out);
                w.write_batches(&batches)?;
                w.finish()?;
                drop(w);
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
            }
            OutputFormat::Csv => {
                if self.batches.is_empty() {
                    let names: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
                    out.extend_from_slice(names.join(",").as_bytes());
                    out.push(b'\n');
                } else {
                    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                    for b in &batches {
                        w.write(b)?;
                    }
                }
            }
            OutputFormat::Table => {
                let table = if self.batches.is_empty() {
                    arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(self.schema.clone())])?
                } else {
                    arrow::util::pretty::pretty_format_batches(&self.batches)?
                };
                out.extend_from_slice(table.to_string().as_bytes());
                out.push(b'\n');
            }
        }
        Ok(out)
    }
}
