//! `yaffle downsample` (a worker of the consumer group) and `yaffle backfill`; standalone mode's
//! downsampling is `yaffle_downsample::log`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use prometheus_client::registry::Registry;
use yaffle_downsample::Metrics;
use yaffle_downsample::backfill::{self, Request, Target};
use yaffle_downsample::kafka::run_worker;
use yaffle_log::Log;

use crate::config::Config;

/// Runs a worker of the consumer group until SIGINT or SIGTERM, serving `/metrics` on
/// `downsample.bind`.
pub(crate) async fn run(config: Config) -> Result<(), String> {
    let store = crate::open_store(&config).await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let bind = config.downsample.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on downsample.bind {bind}: {e}"))?;
    let app = Router::new().route("/metrics", get(render)).with_state(Arc::new(registry));
    let http = config.http.clone();
    tokio::spawn(async move { yaffle_ingest::http::serve_router(listener, app, &http, std::future::pending()).await });
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::current();
    let mut worker = {
        let stop = Arc::clone(&stop);
        let config = config.downsample.clone();
        tokio::task::spawn_blocking(move || run_worker(&config, store, metrics, &stop, &handle))
    };
    tokio::select! {
        r = &mut worker => return r.map_err(|e| format!("worker panicked: {e}"))?,
        () = crate::standalone::shutdown_signal() => stop.store(true, Ordering::Relaxed),
    }
    worker.await.map_err(|e| format!("worker panicked: {e}"))?
}

async fn render(State(registry): State<Arc<Registry>>) -> Response {
    yaffle_ingest::http::render_metrics(&registry)
}

/// `yaffle backfill`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BackfillArgs {
    /// Start of the range: RFC 3339 (`2026-11-22T10:00:00Z`) or unix seconds.
    #[arg(long)]
    from: String,
    /// End of the range (exclusive), same forms.
    #[arg(long)]
    to: String,
    /// A resolution to compute (repeatable); the configured ones when absent.
    #[arg(long = "resolution", value_parser = humantime::parse_duration)]
    resolutions: Vec<Duration>,
    /// `rollups` (default) or `raw` (delete the range's raw points, write them again from the log).
    #[arg(long, default_value = "rollups", value_parser = ["rollups", "raw"])]
    target: String,
    /// With `--target raw`: only this shard (1-based, repeatable); all when absent.
    #[arg(long = "shard")]
    shards: Vec<usize>,
    /// How far outside the range (by ingest time) the log is read.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    slack: Duration,
    /// Where the history is read: `kafka` (the topic of `downsample.kafka`), `log` (standalone's
    /// durable log in `data_dir`, with the server stopped), or `auto`: Kafka when `sinks.kafka` is
    /// enabled, else the log.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kafka", "log"])]
    source: String,
}

/// Replays a time range of the Kafka topic, or of standalone's log, into the configured store, with a
/// progress bar.
pub(crate) async fn backfill(config: Config, args: BackfillArgs) -> Result<(), String> {
    let request = Request {
        from_ns: parse_time(&args.from).map_err(|e| format!("--from: {e}"))?,
        to_ns: parse_time(&args.to).map_err(|e| format!("--to: {e}"))?,
        resolutions: args.resolutions,
        target: if args.target == "raw" { Target::Raw } else { Target::Rollups },
        shards: args
            .shards
            .iter()
            .map(|s| s.checked_sub(1).ok_or("--shard counts from 1"))
            .collect::<Result<_, _>>()?,
        slack: args.slack,
    };
    let from_kafka = match args.source.as_str() {
        "kafka" => true,
        "log" => false,
        _ => config.sinks.kafka.enabled,
    };
    let report = if from_kafka {
        let store = crate::open_store(&config).await?;
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || backfill::from_kafka(&config.downsample, store, request, &handle))
            .await
            .map_err(|e| format!("backfill panicked: {e}"))??
    } else {
        // The log first: its lock says whether a server still runs on this data directory (whose
        // store must not be opened for writing beside it).
        let metrics = Arc::new(yaffle_log::LogMetrics::default());
        let log = Log::open(&config.data_dir, &config.log, metrics)
            .map_err(|e| format!("opening the log (stop yaffle standalone first): {e}"))?;
        let store = crate::open_store(&config).await?;
        let report = backfill::from_log(&config.downsample, store, request, &log).await;
        log.shutdown();
        report?
    };
    eprintln!(
        "backfill done: {} records read, {} rollups and {} points written",
        report.records, report.rollups, report.points
    );
    Ok(())
}

/// RFC 3339 or unix seconds, as nanoseconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(1_000_000_000).ok_or_else(|| format!("{s} is out of range"));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("{s:?} is neither RFC 3339 nor unix seconds: {e}"))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{s} is before 1970"))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("{s} is out of range"))
}
