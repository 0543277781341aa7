//! `yaffle alert` (an evaluator serving its API) and `yaffle rules check`.

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use yaffle_alert::server::{self, ApiState};
use yaffle_alert::{AlertConfig, Metrics, RuleSet, Service};

/// Runs an evaluator until SIGINT or SIGTERM.
pub(crate) async fn run(config: AlertConfig) -> Result<(), String> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let (stop, stopped) = watch::channel(false);
    let bind = config.bind;
    let service = Service::start(config, metrics, stopped).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("rules do not load:\n{}", lines.join("\n"))
    })?;
    let listener =
        tokio::net::TcpListener::bind(bind).await.map_err(|e| format!("cannot listen on alert.bind {bind}: {e}"))?;
    tracing::info!(%bind, "yaffle alert ready");
    let app = server::app(ApiState { service, registry: Arc::new(registry) });
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::standalone::shutdown_signal())
        .await
        .map_err(|e| format!("http server: {e}"))?;
    let _ = stop.send(true);
    Ok(())
}

/// Checks rule files like `promtool check rules`: a report per file on stdout, problems on stderr;
/// `Ok(false)` when any file has a problem.
pub(crate) fn check(files: &[PathBuf], config: &AlertConfig) -> bool {
    let mut ok = true;
    for file in files {
        println!("Checking {}", file.display());
        match RuleSet::load(std::slice::from_ref(file), config.default_interval) {
            Ok(set) => println!("  SUCCESS: {} rules found\n", set.rule_count()),
            Err(errors) => {
                ok = false;
                println!("  FAILED:");
                for e in errors {
                    eprintln!("{e}");
                }
                println!();
            }
        }
    }
    ok
}
