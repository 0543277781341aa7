//! End-to-end tests: the real `yaffle` binary on real sockets, pushed to by real clients.
//!
//! External peers (PyPI `influxdb` and `influxdb-client`, Debian `prometheus`) are installed by
//! `scripts/test-deps`; a test whose peer is missing fails and says how to install it.

mod alerting;
#[path = "../peers/alertmanager.rs"]
mod alertmanager;
mod clickhouse;
mod clients;
mod downsampling;
mod durability;
#[path = "../peers/kafka.rs"]
mod kafka;
mod promql;
mod standalone;
mod support;
#[path = "../peers/webhook.rs"]
mod webhook;
