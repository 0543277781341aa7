//! Yaffle alerting: Prometheus rule files evaluated on the stream of points, delivered to Alertmanager.
//!
//! Job (see `shared/design.md`): evaluators receive points from ingest's `alert` cursor (routed by the
//! measurement hash), evaluate a documented PromQL subset on event time, and notify Alertmanager, so
//! alerting keeps working while the store and Kafka are down.
//!
//! Status: not built yet (the alerting issue). The crate exists so the workspace has its final shape
//! and dependency direction: it may depend on `yaffle-core`, never on ingest or the store.
