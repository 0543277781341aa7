//! ClickHouse `JSONCompact` answers as Arrow record batches, so both backends render results alike.
//!
//! Integers become Int64/UInt64, floats Float64, `Nullable(T)` a nullable column of T's kind, and every
//! other type (String, DateTime, Array, ...) its text as ClickHouse prints it (arrays and tuples as
//! JSON). 18.16 has no Arrow output format, hence this conversion.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};
use serde::Deserialize;
use serde_json::Value;

use crate::{QueryResult, StoreError};

#[derive(Debug, Deserialize)]
struct Answer {
    meta: Vec<Column>,
    data: Vec<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Parses a `JSONCompact` body (sent with `output_format_json_quote_64bit_integers=0`).
pub(crate) fn to_result(body: &[u8]) -> Result<QueryResult, StoreError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| StoreError::Execution(format!("unreadable ClickHouse answer: {e}")))?;
    let mut fields = Vec::with_capacity(answer.meta.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(answer.meta.len());
    for (i, c) in answer.meta.iter().enumerate() {
        let (nullable, inner) = match c.kind.strip_prefix("Nullable(").and_then(|t| t.strip_suffix(')')) {
            Some(inner) => (true, inner),
            None => (false, c.kind.as_str()),
        };
        let inner = inner.strip_prefix("LowCardinality(").and_then(|t| t.strip_suffix(')')).unwrap_or(inner);
        let values = answer.data.iter().map(|row| row.get(i).unwrap_or(&Value::Null));
        let (kind, array): (DataType, ArrayRef) = match inner {
            "Int8" | "Int16" | "Int32" | "Int64" => {
                let mut b = Int64Builder::with_capacity(answer.data.len());
                values.for_each(|v| b.append_option(v.as_i64()));
                (DataType::Int64, Arc::new(b.finish()))
            }
            "UInt8" | "UInt16" | "UInt32" | "UInt64" => {
                let mut b = UInt64Builder::with_capacity(answer.data.len());
                values.for_each(|v| b.append_option(v.as_u64()));
                (DataType::UInt64, Arc::new(b.finish()))
            }
            "Float32" | "Float64" => {
                let mut b = Float64Builder::with_capacity(answer.data.len());
                values.for_each(|v| b.append_option(v.as_f64()));
                (DataType::Float64, Arc::new(b.finish()))
            }
            _ => {
                let mut b = StringBuilder::new();
                values.for_each(|v| match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    other => b.append_value(other.to_string()),
                });
                (DataType::Utf8, Arc::new(b.finish()))
            }
        };
        // NaN and infinities arrive as null even in non-Nullable columns.
        fields.push(Field::new(&c.name, kind, nullable || array.null_count() > 0));
        columns.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| StoreError::Encoding(e.to_string()))?;
    Ok(QueryResult { schema, batches: vec![batch], warnings: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputFormat;

    #[test]
    fn converts_every_kind_of_column() {
        let body = br#"{"meta":[{"name":"n","type":"UInt64"},{"name":"i","type":"Nullable(Int64)"},
            {"name":"f","type":"Float64"},{"name":"s","type":"LowCardinality(String)"},
            {"name":"a","type":"Array(String)"},{"name":"t","type":"DateTime"}],
            "data":[[1,-2,1.5,"x",["p","q"],"2026-11-22 00:00:00"],[2,null,null,"y",[],"1970-01-01 00:00:00"]],
            "rows":2}"#;
        let r = to_result(body).unwrap();
        let json = String::from_utf8(r.render(OutputFormat::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"[{"n":1,"i":-2,"f":1.5,"s":"x","a":"[\"p\",\"q\"]","t":"2026-11-22 00:00:00"},{"n":2,"i":null,"f":null,"s":"y","a":"[]","t":"1970-01-01 00:00:00"}]"#
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(to_result(b"Code: 62").is_err());
    }
}
