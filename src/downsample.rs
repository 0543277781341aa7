//! `yaffle downsample` (a worker of the consumer group), `yaffle backfill`, and standalone mode's
//! in-process downsampling on the durable log's `kafka` cursor.
//!
//! Standalone follows the workers' contract (see `yaffle_downsample::kafka`) with the log in place of
//! Kafka: the cursor is committed at the position where a replay must start (the log position at
//! `DownsampleConfig::replay_from(emitted_through)`, by ingest time) and the emitted watermark is recorded
//! with it as the cursor's metadata. After a restart the reader starts at the cursor, rebuilds the
//! open windows and emits only windows past the recorded watermark.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use yaffle_downsample::backfill::{self, Request, Target};
use yaffle_downsample::kafka::{commit_metadata, parse_metadata, run_worker};
use yaffle_downsample::{DownsampleConfig, Engine, Metrics};
use yaffle_log::{CursorName, Log};
use yaffle_store::Store;

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
    tokio::spawn(async move { axum::serve(listener, app).await });
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
}

/// Replays a time range of the Kafka topic into the configured store, with a progress bar.
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
    let store = crate::open_store(&config).await?;
    let handle = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || backfill::from_kafka(&config.downsample, store, request, &handle))
        .await
        .map_err(|e| format!("backfill panicked: {e}"))??;
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

/// Standalone's downsampling: reads the log's `kafka` cursor until `stop`.
pub(crate) fn spawn_standalone(
    log: Arc<Log>,
    store: Arc<dyn Store>,
    config: DownsampleConfig,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut engine = Engine::new(config.windows(), metrics);
        engine.assign(0, parse_metadata(&log.cursor_metadata(CursorName::Kafka)));
        let mut reader = log.reader(CursorName::Kafka);
        let mut last_commit = Instant::now();
        loop {
            match reader.next(1 << 20, Duration::from_millis(100)).await {
                Ok(records) => {
                    for r in records {
                        if let Err(e) = engine.add(0, &r.payload, false) {
                            tracing::error!(position = r.position, error = %e, "skipping a record that does not decode");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the log");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let stopping = *stop.borrow();
            if stopping || last_commit.elapsed() >= config.commit_interval {
                last_commit = Instant::now();
                commit(&log, &mut engine, store.as_ref(), reader.position(), &config).await;
            }
            if stopping {
                return;
            }
        }
    })
}

/// Writes finished rows, then moves the cursor to where a replay of the open windows starts.
async fn commit(log: &Log, engine: &mut Engine, store: &dyn Store, read: u64, config: &DownsampleConfig) {
    engine.report_late();
    if let Err(e) = engine.write_pending(store).await {
        tracing::warn!(error = %e, rows = engine.pending().len(), "writing rollups failed; retrying");
        return;
    }
    let Some(emitted) = engine.emitted_through(0) else { return };
    let replay_from = match log.position_at_time(config.replay_from(emitted)) {
        Ok(p) => p.min(read),
        Err(e) => return tracing::warn!(error = %e, "finding the replay position"),
    };
    if let Err(e) = log.commit_with_metadata(CursorName::Kafka, replay_from, &commit_metadata(Some(emitted))) {
        tracing::warn!(error = %e, "committing the kafka cursor");
    }
}
