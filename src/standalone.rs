//! `yaffle standalone`: every tier in one process, no external service; and `yaffle ingest`, the
//! ingest proxy of a cluster: the HTTP API, the durable log and the sinks configured (the ClickHouse
//! store, Kafka, the evaluators), with no embedded store and no in-process downsampling or
//! evaluator (the `yaffle downsample` workers and `yaffle alert` evaluators do that).

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use yaffle_downsample::log::LogDownsampler;
use yaffle_ingest::Metrics;
use yaffle_ingest::cardinality::SeriesLimiter;
use yaffle_ingest::http::{self, AppState};
use yaffle_ingest::schema::FieldTypes;
use yaffle_ingest::sinks::alert::AlertSink;
use yaffle_ingest::sinks::clickhouse::ClickHouseSink;
use yaffle_ingest::sinks::kafka::KafkaSink;
use yaffle_ingest::sinks::store::StoreSink;
use yaffle_log::sink::Supervisor;
use yaffle_log::{Log, now_ns};
use yaffle_store::Store;
use yaffle_store::clickhouse::ClickHouseStore;
use yaffle_store::embedded::EmbeddedStore;

use crate::config::{Config, StoreBackend};

/// Which process this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything in one process.
    Standalone,
    /// The ingest proxy of a cluster.
    Ingest,
}

/// Runs until SIGINT or SIGTERM, then stops accepting, lets every sink deliver what it holds, and
/// closes the log.
pub(crate) async fn run(mut config: Config, role: Role) -> Result<(), String> {
    let standalone = role == Role::Standalone;
    // In-process evaluation is standalone's; ingest only delivers to evaluators.
    let in_process_alerts = standalone && !config.alert.rule_files.is_empty();
    if !standalone && !config.alert.rule_files.is_empty() {
        tracing::warn!(
            "alert.rule_files is not read by yaffle ingest: run yaffle alert, listed in sinks.alert.evaluators"
        );
    }
    let alerting = in_process_alerts || !config.sinks.alert.evaluators.is_empty();
    if alerting {
        config.log.cursors.alert.enabled = true;
    }
    let downsampling = standalone && config.downsample.standalone && !config.sinks.kafka.enabled;
    // The ingest role keeps no store of its own: with the embedded backend it only tees.
    let stores = config.store.backend == StoreBackend::ClickHouse || standalone;
    if !stores {
        config.log.cursors.store.enabled = false;
    }
    if config.sinks.kafka.enabled {
        config.log.cursors.kafka.enabled = true;
    }
    if downsampling {
        config.log.cursors.downsample.enabled = true;
    }
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("creating data_dir {}: {e}", data_dir.display()))?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let log = Arc::new(Log::open(data_dir, &config.log, Arc::clone(&metrics.log)).map_err(|e| e.to_string())?);
    let field_types = Arc::new(FieldTypes::open(&data_dir.join("field_types.jsonl")).map_err(|e| e.to_string())?);

    let (stop, stopped) = watch::channel(false);
    let sinks = Supervisor::new(&mut registry);
    let mut tasks = Vec::new();
    // The store sink runs while its cursor is enabled (`log.cursors.store.enabled = false` measures or
    // runs without it); the store is queried either way.
    let store_sink = config.log.cursors.store.enabled;
    let store: Option<Arc<dyn Store>> = match config.store.backend {
        StoreBackend::Embedded if !stores => None,
        StoreBackend::Embedded => {
            let store =
                Arc::new(EmbeddedStore::open(data_dir, &config.store.embedded).await.map_err(|e| e.to_string())?);
            if store_sink {
                let sink =
                    StoreSink::new(Arc::clone(&log), store.clone(), config.sinks.store.clone(), Arc::clone(&metrics));
                tasks.push(sink.spawn(&sinks, stopped));
            }
            Some(store)
        }
        StoreBackend::ClickHouse => {
            let store = Arc::new(ClickHouseStore::new(&config.store.clickhouse).map_err(|e| e.to_string())?);
            if store_sink {
                let sink = ClickHouseSink::new(
                    Arc::clone(&log),
                    Arc::clone(&store),
                    config.sinks.clickhouse.clone(),
                    Arc::clone(&metrics),
                    data_dir.join("clickhouse"),
                );
                tasks.extend(sink.spawn(&sinks, stopped));
            }
            Some(store)
        }
    };
    if let Some(store) = &store {
        tokio::spawn(retention(Arc::clone(store), config.store.retention_check_interval, stop.subscribe()));
    }
    if alerting {
        let destinations = if in_process_alerts {
            crate::alert::in_process(&config, &mut registry, stop.subscribe()).await?
        } else {
            crate::alert::remote(&config)?
        };
        let sink = AlertSink::new(
            Arc::clone(&log),
            config.sinks.alert.clone(),
            Arc::clone(&metrics),
            data_dir.join("alert"),
            destinations,
        );
        tasks.extend(sink.spawn(&sinks, stop.subscribe()).map_err(|e| e.to_string())?);
    }
    if config.sinks.kafka.enabled {
        let sink = KafkaSink::new(Arc::clone(&log), config.sinks.kafka.clone(), Arc::clone(&metrics));
        tasks.push(sink.spawn(&sinks, stop.subscribe()));
    }
    if downsampling && let Some(store) = &store {
        let metrics = Arc::new(yaffle_downsample::Metrics::new(&mut registry));
        let (log, store) = (Arc::clone(&log), Arc::clone(store));
        let downsampler = LogDownsampler::new(log, store, config.downsample.clone(), metrics);
        tasks.push(downsampler.spawn(&sinks, stop.subscribe()));
    }

    let listener = tokio::net::TcpListener::bind(config.http.bind)
        .await
        .map_err(|e| format!("cannot listen on http.bind {}: {e}", config.http.bind))?;
    let name = if standalone { "yaffle standalone ready" } else { "yaffle ingest ready" };
    tracing::info!(bind = %config.http.bind, data_dir = %data_dir.display(), "{name}");
    let reads = yaffle_query::QueryState::new(
        store.clone(),
        config.query.clone(),
        config.http.remote_write_database.clone(),
        Arc::new(config.auth.clone()),
        &config.downsample.resolutions,
        &mut registry,
    );
    let state = AppState {
        log: Arc::clone(&log),
        field_types,
        store,
        metrics,
        registry: Arc::new(registry),
        http: Arc::new(config.http.clone()),
        limits: Arc::new(config.limits.clone()),
        auth: Arc::new(config.auth.clone()),
        sinks,
        series: Arc::new(SeriesLimiter::from_limits(&config.limits)),
    };
    let app = http::app(state).merge(yaffle_query::router(reads));
    http::serve_router(listener, app, &config.http, shutdown_signal())
        .await
        .map_err(|e| format!("http server: {e}"))?;
    tracing::info!("stopping");
    let _ = stop.send(true);
    for task in tasks {
        // The runtime catches a sink's panics and errors; a join error means it was cancelled.
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a sink task ended abnormally");
        }
    }
    log.shutdown();
    Ok(())
}

async fn retention(store: Arc<dyn Store>, every: std::time::Duration, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => match store.enforce_retention(now_ns()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(partitions = n, "retention dropped partitions"),
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            },
            _ = stopped.changed() => return,
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
