//! The alert sink: the log's points, routed to alert evaluators, each replica at its own pace.
//!
//! # Guarantees
//! - **Routing.** A point goes to evaluator `route % n` under the configured distribution strategy
//!   (measurement by default) and to every replica of that evaluator.
//! - **Independent progress.** Each replica has its own position (`evaluator-I-replica-J.json`); one
//!   down or slow delays no other. The log's `alert` cursor is the oldest position any replica may
//!   still need, so segments are kept until then.
//! - **Rebuild on restart.** An evaluator keeps its state in memory only and reports an `instance` and
//!   a `horizon`. The sink keeps, per replica, the position from which `horizon` of points (by ingest
//!   time) can be replayed. When the instance it reaches differs from the one it last delivered to,
//!   the evaluator lost its state: the sink replays from that position, which rebuilds every window and
//!   every pending or firing alert. Every push names the instance it is meant for, so a restarted
//!   evaluator refuses live points (409) until its history was replayed to it. Points are delivered at least once; a replayed point is the same
//!   sample again, which the evaluator stores once.

mod config;
mod destination;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{AlertSinkConfig, EvaluatorTarget};
pub use destination::{Ack, Destination, HttpDestination, INSTANCE_HEADER};
pub use sink::AlertSink;
