//! `yaffle`: the one binary of the Yaffle metrics pipeline.
//!
//! - `yaffle standalone`: ingest, the durable log, the embedded store and the SQL API in one process,
//!   with no external service. The default configuration listens on 127.0.0.1:8086 and keeps its data
//!   under `./data`.
//! - `yaffle ingest`: the ingest proxy of a cluster (HTTP API, durable log, the sinks configured:
//!   ClickHouse store, Kafka, evaluators), with no embedded store and no in-process downsampling.
//! - `yaffle store init`: creates the store's tables (also done at start-up).
//! - `yaffle query SQL`: runs SQL against the configured store.
//! - `yaffle alert`: a streaming alert evaluator (rule files, Alertmanager).
//! - `yaffle rules check FILE...`: checks rule files, like `promtool check rules`.
//! - `yaffle downsample`: a downsampling worker of the Kafka consumer group.
//! - `yaffle backfill --from T1 --to T2`: recomputes rollups (or raw points) of a past range from Kafka.

mod alert;
mod config;
mod downsample;
mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use yaffle_store::clickhouse::ClickHouseStore;
use yaffle_store::embedded::EmbeddedStore;
use yaffle_store::{OutputFormat, Store};

use crate::config::{CONFIG_ENV, Config, StoreBackend};

#[derive(Debug, Parser)]
#[command(name = "yaffle", version, about = "Streaming metrics pipeline: ingest, durable tee, store, SQL")]
struct Cli {
    /// TOML configuration file (defaults apply without one; YAFFLE_* variables override both).
    #[arg(long, short, global = true, env = CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs ingest, the durable log, the embedded store and the HTTP API in one process.
    Standalone,
    /// Runs the ingest proxy of a cluster: HTTP API, durable log, and the sinks configured (ClickHouse
    /// store, Kafka, evaluators); no embedded store, no in-process downsampling or evaluator.
    Ingest,
    /// Store administration.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Runs one SQL query against the configured store and prints the result.
    Query {
        /// The SQL statement (tables: `points`, `rollups`).
        sql: String,
        /// Output format.
        #[arg(long, short, default_value = "table", value_parser = ["table", "json", "csv"])]
        format: String,
    },
    /// Runs a streaming alert evaluator: points pushed by ingest, rule files, Alertmanager.
    Alert,
    /// Runs a downsampling worker: one member of the Kafka consumer group, rollups into the store.
    Downsample,
    /// Replays a past range of the Kafka topic into rollups (or, `--target raw`, raw points).
    Backfill(downsample::BackfillArgs),
    /// Alert rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Checks rule files (syntax, what the stream evaluator refuses, templates); exit code 1 if any has a problem.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Creates the store's database and tables if they do not exist (ClickHouse: `ON CLUSTER`, by
    /// server version). Ingest also does this at start-up.
    Init,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Rules { command: RulesCommand::Check { files } } = &cli.command {
        return if alert::check(files, &config.alert) { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Standalone => standalone::run(config, standalone::Role::Standalone).await,
            Command::Ingest => standalone::run(config, standalone::Role::Ingest).await,
            Command::Store { command: StoreCommand::Init } => store_init(config).await,
            Command::Query { sql, format } => query(config, &sql, &format).await,
            Command::Alert => alert::run(config).await,
            Command::Downsample => downsample::run(config).await,
            Command::Backfill(args) => downsample::backfill(config, args).await,
            Command::Rules { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configured store, ready for writes (ClickHouse: tables created if missing).
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    Ok(match config.store.backend {
        StoreBackend::Embedded => {
            Arc::new(EmbeddedStore::open(&config.data_dir, &config.store.embedded).await.map_err(|e| e.to_string())?)
        }
        StoreBackend::ClickHouse => {
            let store = ClickHouseStore::new(&config.store.clickhouse).map_err(|e| e.to_string())?;
            store.init().await.map_err(|e| e.to_string())?;
            Arc::new(store)
        }
    })
}

async fn store_init(config: Config) -> Result<(), String> {
    match config.store.backend {
        StoreBackend::Embedded => {
            EmbeddedStore::open(&config.data_dir, &config.store.embedded).await.map_err(|e| e.to_string())?;
        }
        StoreBackend::ClickHouse => {
            let store = ClickHouseStore::new(&config.store.clickhouse).map_err(|e| e.to_string())?;
            store.init().await.map_err(|e| e.to_string())?;
        }
    }
    eprintln!("store ready");
    Ok(())
}

async fn query(config: Config, sql: &str, format: &str) -> Result<(), String> {
    let format = OutputFormat::parse(format).expect("clap checked the format");
    let store: Box<dyn Store> = match config.store.backend {
        StoreBackend::Embedded => Box::new(
            EmbeddedStore::open_read_only(&config.data_dir, &config.store.embedded).await.map_err(|e| e.to_string())?,
        ),
        StoreBackend::ClickHouse => {
            Box::new(ClickHouseStore::new(&config.store.clickhouse).map_err(|e| e.to_string())?)
        }
    };
    let result = store.query(sql).await.map_err(|e| e.to_string())?;
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    let bytes = result.render(format).map_err(|e| e.to_string())?;
    use std::io::Write;
    std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())
}
