//! Query results and their output formats.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

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
