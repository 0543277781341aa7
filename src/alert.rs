//! `yaffle alert` (an evaluator serving its API), `yaffle rules check`, and the evaluators standalone
//! mode delivers to: its own, in-process, when `alert.rule_files` is set, else `sinks.alert.evaluators`.

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use yaffle_alert::server::{self, ApiState};
use yaffle_alert::{AlertConfig, Metrics, RuleSet, Service};
use yaffle_core::Batch;
use yaffle_ingest::http::serve_router;
use yaffle_ingest::sinks::alert::{Ack, Destination, HttpDestination};
use yaffle_log::sink::SinkError;

use crate::config::Config;

/// The in-process evaluator as an alert sink destination: the same rebuild contract as over HTTP.
#[derive(Debug)]
struct InProcess(Service);

#[async_trait::async_trait]
impl Destination for InProcess {
    fn name(&self) -> String {
        "in-process".into()
    }

    async fn status(&self) -> Result<Ack, String> {
        Ok(ack(self.0.status()))
    }

    async fn push(&self, batch: &Batch, _: &[u8], expected: Option<&str>) -> Result<(Ack, bool), SinkError> {
        let status = self.0.status();
        if expected.is_some_and(|e| e != status.instance) {
            return Ok((ack(status), false));
        }
        self.0.push(batch.clone()).await.map(|s| (ack(s), true)).map_err(SinkError::retryable)
    }
}

fn api_state(config: &Config, service: Service, registry: Registry) -> ApiState {
    ApiState {
        service,
        registry: Arc::new(registry),
        auth: Arc::new(config.auth.clone()),
        max_push_bytes: config.alert.max_push_bytes.as_u64() as usize,
    }
}

fn ack(s: yaffle_alert::Status) -> Ack {
    Ack { instance: s.instance, horizon_seconds: s.horizon_seconds }
}

/// The remote evaluators of `sinks.alert.evaluators`, by evaluator.
pub(crate) fn remote(config: &Config) -> Result<Vec<Vec<Arc<dyn Destination>>>, String> {
    let sink = &config.sinks.alert;
    let ca = if sink.tls_ca.as_os_str().is_empty() {
        Vec::new()
    } else {
        yaffle_alert::config::read_ca(&sink.tls_ca).map_err(|e| format!("sinks.alert.tls_ca: {e}"))?
    };
    let destination =
        |url: &String| Arc::new(HttpDestination::new(url, sink.timeout, &sink.token, &ca)) as Arc<dyn Destination>;
    Ok(sink.evaluators.iter().map(|e| e.replicas.iter().map(destination).collect()).collect())
}

/// Standalone's own evaluator, in-process (its API served on `alert.bind`, its metrics on the
/// `/metrics` of `http.bind`).
pub(crate) async fn in_process(
    config: &Config,
    registry: &mut Registry,
    stop: watch::Receiver<bool>,
) -> Result<Vec<Vec<Arc<dyn Destination>>>, String> {
    let metrics = Arc::new(Metrics::new(registry));
    let mut alert = config.alert.clone();
    // Recording rule results go back through this process's own write path, unless told otherwise.
    if alert.recording.url.is_empty() {
        let scheme = if config.http.tls.cert.as_os_str().is_empty() { "http" } else { "https" };
        let port = config.http.bind.port();
        alert.recording.url = format!("{scheme}://localhost:{port}/api/v1/write");
        if alert.recording.token.is_empty() {
            alert.recording.token = config.auth.tokens.first().cloned().unwrap_or_default();
        }
    }
    let service = start(alert, metrics, stop)?;
    let listener = tokio::net::TcpListener::bind(config.alert.bind)
        .await
        .map_err(|e| format!("cannot listen on alert.bind {}: {e}", config.alert.bind))?;
    let app = server::app(api_state(config, service.clone(), Registry::default()));
    let http = config.http.clone();
    tokio::spawn(async move { serve_router(listener, app, &http, crate::standalone::shutdown_signal()).await });
    Ok(vec![vec![Arc::new(InProcess(service)) as Arc<dyn Destination>]])
}

fn start(config: AlertConfig, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Result<Service, String> {
    Service::start(config, metrics, stop).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("rules do not load:\n{}", lines.join("\n"))
    })
}

/// Runs an evaluator until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config) -> Result<(), String> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let (stop, stopped) = watch::channel(false);
    let bind = config.alert.bind;
    let service = start(config.alert.clone(), metrics, stopped)?;
    let listener =
        tokio::net::TcpListener::bind(bind).await.map_err(|e| format!("cannot listen on alert.bind {bind}: {e}"))?;
    tracing::info!(%bind, "yaffle alert ready");
    let app = server::app(api_state(&config, service, registry));
    serve_router(listener, app, &config.http, crate::standalone::shutdown_signal())
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
