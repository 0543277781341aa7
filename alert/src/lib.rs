//! Yaffle alerting: Prometheus alert rule files evaluated on the stream of points, delivered to
//! Alertmanager.
//!
//! Evaluators receive points straight from ingest (its `alert` log cursor, routed by the measurement
//! hash so a rule aggregating across series sees all of them), keep in memory only the series and
//! samples their rules can read, evaluate PromQL with the shared engine ([`expr`], [`yaffle_promql`]) and notify Alertmanager
//! ([`notifier`]). The store and Kafka play no part, so alerting keeps working while they are down.
//!
//! # What "on the stream" means
//! - **Event time.** The evaluator's clock is the latest point timestamp it has received. Rules are
//!   evaluated *at the clock*, exactly as Prometheus would evaluate them at that instant: as soon as a
//!   burst of points arrives (only the rules whose selectors those points touch), and on every `tick`
//!   (all rules). `for`, `keep_firing_for`, `activeAt` and `startsAt` are event times.
//! - **Idle streams.** When no point arrives for a tick, the clock advances by the wall time elapsed
//!   since the last point, so `for` completes, series go stale and `absent()` fires with no traffic.
//!   Points further than `max_future` ahead of the wall clock are dropped so one bad clock cannot jump
//!   event time.
//! - **Staleness.** An instant selector sees a series' latest sample at or before the evaluation time
//!   and no older than `lookback` (5 minutes by default, both ends inclusive as in Prometheus 2.x); a
//!   Prometheus staleness marker (remote_write) ends the series at once. Range selectors `[d]` read
//!   samples in `[t - d, t]`.
//! - **Out-of-order points.** A point older than its series' latest sample is inserted in order if a rule
//!   can still read it (it is within the longest range or lookback of the clock), else dropped and
//!   counted (`yaffle_alert_samples_total{outcome="dropped"}`). Evaluations already made are not
//!   redone: a late point shows from the next evaluation on.
//! - **Restarts.** The evaluator keeps no state on disk. A source that pushes to it learns its
//!   `instance` and `horizon` ([`service::Status`]); when the instance changes, the source replays the
//!   last `horizon` of points (the longest range or lookback, plus the longest `for` +
//!   `keep_firing_for`), which rebuilds every series window and every pending and firing alert.
//!   Alertmanager deduplicates the alerts sent again.
//! - **Bounded state.** At most `max_series` series (new ones past it are dropped and counted); samples
//!   older than any rule can read are dropped on every tick; a group's `limit` bounds the alerts of
//!   each of its rules, as in Prometheus. `/metrics` shows series, samples and alerts by state.
//!
//! Metric names: a line-protocol field is `<measurement>_<field>` with the tags as labels
//! (booleans read as 0 and 1, strings are not numbers); remote_write samples keep their names.

pub mod alerting;
pub mod config;
pub mod evaluator;
pub mod expr;
pub use yaffle_promql as promql;
/// Label sets (the PromQL engine's).
pub mod labels {
    pub use yaffle_promql::{Labels, METRIC_NAME};
}
pub mod metrics;
pub mod notifier;
pub mod recorder;
pub mod rules;
pub mod series;
pub mod server;
pub mod service;
pub mod template;

pub use config::AlertConfig;
pub use evaluator::Evaluator;
pub use metrics::Metrics;
pub use rules::{RuleError, RuleSet};
pub use service::{Service, Status};
