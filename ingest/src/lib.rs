//! Yaffle ingest: the HTTP write API, the durable log, and the sinks that read it.
//!
//! A write is parsed completely and validated ([`http`]), appended to the local durable log ([`yaffle_log`]) and only then
//! acknowledged. Each sink reads the log through its own named cursor, so a sink whose destination is
//! down only falls behind; the others and ingest carry on ([`sinks`]).
//!
//! Guarantees: an acknowledged write survives `kill -9` of the process (and, with the default fsync
//! policy, of the machine); a bad line is reported with its line number and reason while the good lines
//! of the same request are kept; every limit is configurable and named in the error that enforces it.

pub mod cardinality;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod schema;
pub mod sinks;

pub use error::IngestError;
pub use metrics::Metrics;
