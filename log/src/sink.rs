//! The sink runtime: one driver for everything that delivers the log somewhere (the store, ClickHouse
//! shards, Kafka, evaluator replicas, standalone downsampling), and one supervisor that keeps each of
//! them alive.
//!
//! A sink implements [`Delivery`]: where to start, what to do with a record, when and how to deliver
//! what it holds and commit. The [`Supervisor`] runs it on the [`driver`](Supervisor::spawn), which owns
//! the rest, the same way for every sink:
//! - **Reading** the log from the position [`Delivery::start`] returns, in steps of
//!   [`DriverConfig::read_bytes`], flushing when [`Delivery::flush_now`] says so (a full batch, or
//!   [`DriverConfig::flush_interval`] after the oldest record held), and once more at shutdown.
//! - **Records that do not decode** are skipped, counted in `yaffle_sink_skipped_records_total{sink}`
//!   and logged with their position, by every sink alike; the records around them are delivered.
//! - **Retries.** An error the sink classifies [`SinkError::Retryable`] is retried with the same held
//!   content after a jittered, doubling delay ([`Backoff`]), counted in `yaffle_sink_retries_total` and
//!   shown as `retrying` in [`Supervisor::statuses`]; a success resets the delay.
//! - **Fatal errors and panics** end the attempt: counted in `yaffle_sink_fatal_errors_total`,
//!   `yaffle_sink_up{sink}` drops to 0, the sink is reported `failed` with the error (ingest's `/health`
//!   answers 503 naming it), and after a doubling delay the sink is built again from scratch and
//!   resumes from its committed position (`yaffle_sink_restarts_total`). It is healthy again once a
//!   delivery succeeds or it has caught up with the log. A sink is never left dead while the process
//!   runs.
//!
//! Nothing is committed by the driver itself: [`Delivery::flush`] delivers and commits (a sink may keep
//! its own progress, as the ClickHouse shards and evaluator replicas do), so a restart re-reads
//! everything not committed, and delivery is at least once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::{CursorName, Log, LogError, LogReader, Record};

/// Any error a sink's destination returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A delivery failure, classified by the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The same delivery can succeed later (a destination down, a timeout): retried with backoff.
    #[error("{0}")]
    Retryable(BoxError),
    /// It cannot (a refused configuration, a corrupt progress file): the sink restarts from scratch.
    #[error("{0}")]
    Fatal(BoxError),
}

impl SinkError {
    /// Classifies an error by its [`yaffle_core::ErrorStatus::is_retryable`].
    pub fn classify<E: yaffle_core::ErrorStatus + Send + Sync + 'static>(e: E) -> Self {
        if e.is_retryable() { SinkError::Retryable(Box::new(e)) } else { SinkError::Fatal(Box::new(e)) }
    }

    /// A retryable error.
    pub fn retryable(e: impl Into<BoxError>) -> Self {
        SinkError::Retryable(e.into())
    }

    /// A fatal error.
    pub fn fatal(e: impl Into<BoxError>) -> Self {
        SinkError::Fatal(e.into())
    }
}

impl From<LogError> for SinkError {
    fn from(e: LogError) -> Self {
        SinkError::classify(e)
    }
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Delivered and committed through the position it was given.
    Done,
    /// Read again from this position: the destination lost state and needs its history (an
    /// evaluator that restarted), or must see records again.
    Rewind(u64),
}

/// One sink's delivery, run by the driver. Built afresh by its factory on every (re)start.
pub trait Delivery: Send + 'static {
    /// Prepares the destination and returns the log position to read from. Retried while it fails
    /// retryably.
    fn start(&mut self) -> impl Future<Output = Result<u64, SinkError>> + Send;

    /// Takes a record; `Err` when its payload does not decode (the driver skips and counts it; what was
    /// taken from it before the error stays taken).
    fn add(&mut self, record: &Record) -> Result<(), yaffle_core::batch::DecodeError>;

    /// Whether to flush what is held now; `due` is true once the oldest record held has waited
    /// [`DriverConfig::flush_interval`].
    fn flush_now(&self, due: bool) -> bool;

    /// A position the held content must end at: the driver flushes there before taking a record at or
    /// after it (a ClickHouse block that must be rebuilt exactly as it was first inserted).
    fn cut_at(&self) -> Option<u64> {
        None
    }

    /// Delivers what is held (the records before `end`) and commits `end`. After a retryable error it
    /// is called again with the same content and `end`.
    fn flush(&mut self, end: u64) -> impl Future<Output = Result<Flushed, SinkError>> + Send;

    /// Called once at shutdown after the last flush attempt (persist progress).
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// How the driver reads and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Log bytes read per step.
    pub read_bytes: usize,
    /// Longest a record is held before [`Delivery::flush_now`] is asked with `due`.
    pub flush_interval: Duration,
    /// First retry delay; doubles up to `retry_max`, jittered.
    pub retry_initial: Duration,
    /// Longest retry delay, also the longest delay between restarts.
    pub retry_max: Duration,
}

/// A doubling delay with jitter: each delay is drawn from the upper half of the current step, so
/// sinks that failed together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self { initial, next: initial, max: max.max(initial) }
    }

    /// The delay before the next attempt: between half the step and the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleeps for `d`; true if shutdown was requested meanwhile (or before).
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Where a sink stands, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    /// Preparing its destination.
    Starting,
    /// Delivering.
    Running,
    /// Its last attempt failed retryably; retrying with backoff.
    Retrying,
    /// Its last attempt failed fatally (or panicked); it restarts with backoff.
    Failed,
    /// Shut down.
    Stopped,
}

/// A sink's state, last error and restarts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    /// Where it stands.
    pub state: SinkState,
    /// The last error while retrying or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Restarts after fatal errors so far.
    pub restarts: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Default)]
struct SinkMetrics {
    up: Family<SinkLabels, Gauge>,
    skipped_records: Family<SinkLabels, Counter>,
    retries: Family<SinkLabels, Counter>,
    fatal_errors: Family<SinkLabels, Counter>,
    restarts: Family<SinkLabels, Counter>,
    flushes: Family<SinkLabels, Counter>,
    read_position: Family<SinkLabels, Gauge>,
}

/// Runs sinks on the driver, restarts them after fatal errors, and knows how each one is doing.
#[derive(Debug, Default)]
pub struct Supervisor {
    metrics: SinkMetrics,
    statuses: Mutex<BTreeMap<String, SinkStatus>>,
}

impl Supervisor {
    /// A supervisor whose `yaffle_sink_*` metrics are registered on `registry`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let s = Self::default();
        let m = &s.metrics;
        let r = registry.sub_registry_with_prefix("yaffle_sink");
        r.register("up", "1 while the sink runs, 0 after a fatal error until it recovers", m.up.clone());
        r.register("skipped_records", "Log records skipped because they do not decode", m.skipped_records.clone());
        r.register("retries", "Deliveries retried after a retryable error", m.retries.clone());
        r.register("fatal_errors", "Attempts ended by a fatal error or a panic", m.fatal_errors.clone());
        r.register("restarts", "Restarts after a fatal error", m.restarts.clone());
        r.register("flushes", "Successful deliveries", m.flushes.clone());
        r.register("read_position", "Log position after the last record the sink read", m.read_position.clone());
        Arc::new(s)
    }

    /// Every sink's status, by name.
    pub fn statuses(&self) -> BTreeMap<String, SinkStatus> {
        self.statuses.lock().expect("statuses lock").clone()
    }

    /// `sink: error` for each failed sink; empty when all are healthy.
    pub fn failures(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(_, s)| s.state == SinkState::Failed)
            .map(|(name, s)| format!("{name}: {}", s.error.unwrap_or_default()))
            .collect()
    }

    fn set(&self, sink: &str, state: SinkState, error: Option<String>) {
        let mut statuses = self.statuses.lock().expect("statuses lock");
        let status = statuses.entry(sink.to_string()).or_insert(SinkStatus {
            state: SinkState::Starting,
            error: None,
            restarts: 0,
        });
        status.state = state;
        status.error = error;
    }

    /// Records a retryable failure; a failed sink stays failed until it succeeds.
    fn retrying(&self, sink: &str, error: String) {
        let mut statuses = self.statuses.lock().expect("statuses lock");
        if let Some(s) = statuses.get_mut(sink) {
            if s.state != SinkState::Failed {
                s.state = SinkState::Retrying;
            }
            s.error = Some(error);
        }
    }

    /// Records success: a failed or retrying sink turns running.
    fn ok(&self, sink: &str) {
        let mut statuses = self.statuses.lock().expect("statuses lock");
        if let Some(s) = statuses.get_mut(sink)
            && s.state != SinkState::Running
        {
            s.state = SinkState::Running;
            s.error = None;
            drop(statuses);
            self.metrics.up.get_or_create(&labels(sink)).set(1);
        }
    }

    /// Runs the delivery `make` builds on the driver, reading `log` through `cursor`, until `shutdown`
    /// turns true; builds it again after every fatal error or panic.
    pub fn spawn<D, F>(
        self: &Arc<Self>,
        sink: impl Into<String>,
        log: Arc<Log>,
        cursor: CursorName,
        config: DriverConfig,
        mut make: F,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()>
    where
        D: Delivery,
        F: FnMut() -> D + Send + 'static,
    {
        let sink = sink.into();
        let this = Arc::clone(self);
        let span = tracing::info_span!("sink", sink = %sink);
        this.set(&sink, SinkState::Starting, None);
        tokio::spawn(
            async move {
                let mut restart = Backoff::new(config.retry_initial, config.retry_max);
                let mut shutdown = shutdown;
                loop {
                    let driver = Driver {
                        sink: sink.clone(),
                        supervisor: Arc::clone(&this),
                        log: Arc::clone(&log),
                        cursor,
                        config,
                        shutdown: shutdown.clone(),
                    };
                    let started = Instant::now();
                    let attempt = tokio::spawn(driver.run(make()).in_current_span()).await;
                    let error = match attempt {
                        Ok(Ok(())) => {
                            this.set(&sink, SinkState::Stopped, None);
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                        Err(e) => format!("cancelled: {e}"),
                    };
                    let l = labels(&sink);
                    this.metrics.fatal_errors.get_or_create(&l).inc();
                    this.metrics.up.get_or_create(&l).set(0);
                    this.set(&sink, SinkState::Failed, Some(error.clone()));
                    if started.elapsed() > config.retry_max * 4 {
                        restart.reset();
                    }
                    let delay = restart.next_delay();
                    tracing::error!(error = %error, restart_in = ?delay, "sink failed; restarting it");
                    if sleep_or_shutdown(delay, &mut shutdown).await {
                        this.set(&sink, SinkState::Stopped, Some(error));
                        return;
                    }
                    this.metrics.restarts.get_or_create(&l).inc();
                    this.statuses.lock().expect("statuses lock").get_mut(&sink).expect("registered").restarts += 1;
                }
            }
            .instrument(span),
        )
    }
}

/// The metrics of the sink named `test`, read back.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct TestMetrics {
    pub(crate) skipped: u64,
    pub(crate) retries: u64,
    pub(crate) fatal: u64,
    pub(crate) restarts: u64,
    pub(crate) up: i64,
    pub(crate) read_position: u64,
}

#[cfg(test)]
impl Supervisor {
    pub(crate) fn metrics_for_tests(&self) -> TestMetrics {
        let (m, l) = (&self.metrics, &labels("test"));
        TestMetrics {
            skipped: m.skipped_records.get_or_create(l).get(),
            retries: m.retries.get_or_create(l).get(),
            fatal: m.fatal_errors.get_or_create(l).get(),
            restarts: m.restarts.get_or_create(l).get(),
            up: m.up.get_or_create(l).get(),
            read_position: m.read_position.get_or_create(l).get() as u64,
        }
    }
}

fn labels(sink: &str) -> SinkLabels {
    SinkLabels { sink: sink.to_string() }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// One attempt of one sink.
struct Driver {
    sink: String,
    supervisor: Arc<Supervisor>,
    log: Arc<Log>,
    cursor: CursorName,
    config: DriverConfig,
    shutdown: watch::Receiver<bool>,
}

/// What the driver holds: records taken since the last flush.
struct Held {
    /// Position after the last record taken.
    end: u64,
    /// Position through which everything is flushed.
    flushed: u64,
    /// When the oldest held record was taken.
    since: Option<Instant>,
}

/// Why a flush or a wait ended the attempt.
enum End {
    /// Shutdown came while retrying.
    Stopped,
    /// A fatal error.
    Fatal(SinkError),
}

impl Driver {
    /// Runs until shutdown (`Ok`) or a fatal error.
    async fn run<D: Delivery>(mut self, mut d: D) -> Result<(), SinkError> {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        let start = loop {
            match d.start().await {
                Ok(p) => break p,
                Err(SinkError::Retryable(e)) => {
                    if self.retry_wait(&mut backoff, &*e, "not ready").await.is_err() {
                        return Ok(());
                    }
                }
                Err(fatal) => return Err(fatal),
            }
        };
        backoff.reset();
        let mut reader = self.log.reader(self.cursor);
        reader.seek(start);
        tracing::info!(position = start, "sink started");
        let mut held = Held { end: start, flushed: start, since: None };
        match self.deliver(&mut d, &mut held, &mut reader, &mut backoff).await {
            End::Fatal(e) => Err(e),
            End::Stopped => {
                // A range that must end at a cut is never delivered in part.
                let partial = d.cut_at().is_some_and(|cut| held.end < cut);
                if held.end > held.flushed
                    && !partial
                    && let Err(e) = d.flush(held.end).await
                {
                    tracing::warn!(error = %e, position = held.flushed, "the last delivery at shutdown failed; it is read again at the next start");
                }
                d.close()?;
                tracing::info!(position = held.end, "sink stopped");
                Ok(())
            }
        }
    }

    /// Reads, takes and flushes until shutdown or a fatal error.
    async fn deliver<D: Delivery>(
        &mut self,
        d: &mut D,
        held: &mut Held,
        reader: &mut LogReader,
        backoff: &mut Backoff,
    ) -> End {
        let labels = labels(&self.sink);
        let skipped = self.supervisor.metrics.skipped_records.get_or_create(&labels).clone();
        let position = self.supervisor.metrics.read_position.get_or_create(&labels).clone();
        let interval = self.config.flush_interval;
        loop {
            if *self.shutdown.borrow() {
                return End::Stopped;
            }
            let wait = held.since.map_or(interval, |s| interval.saturating_sub(s.elapsed()));
            let records = tokio::select! {
                _ = self.shutdown.changed() => return End::Stopped,
                r = reader.next(self.config.read_bytes, wait.max(Duration::from_millis(1))) => r,
            };
            let records = match records.map_err(SinkError::from) {
                Ok(records) => records,
                Err(_) if *self.shutdown.borrow() => return End::Stopped,
                Err(SinkError::Retryable(e)) => {
                    if let Err(end) = self.retry_wait(backoff, &*e, "reading the log failed").await {
                        return end;
                    }
                    continue;
                }
                Err(fatal) => return End::Fatal(fatal),
            };
            if records.is_empty() && held.end == held.flushed {
                self.supervisor.ok(&self.sink); // caught up with the log
            }
            for r in &records {
                if d.cut_at().is_some_and(|cut| r.position >= cut)
                    && held.end > held.flushed
                    && let Err(end) = self.flush(d, held, reader, backoff).await
                {
                    return end;
                }
                if let Err(e) = d.add(r) {
                    skipped.inc();
                    tracing::error!(position = r.position, error = %e, "skipped a log record that does not decode");
                }
                held.end = r.next;
                held.since.get_or_insert_with(Instant::now);
            }
            position.set(held.end as i64);
            let due = held.since.is_some_and(|s| s.elapsed() >= interval);
            if held.end > held.flushed
                && d.flush_now(due)
                && let Err(end) = self.flush(d, held, reader, backoff).await
            {
                return end;
            }
        }
    }

    /// Flushes what is held until it succeeds.
    async fn flush<D: Delivery>(
        &mut self,
        d: &mut D,
        held: &mut Held,
        reader: &mut LogReader,
        backoff: &mut Backoff,
    ) -> Result<(), End> {
        loop {
            match d.flush(held.end).await {
                Ok(outcome) => {
                    backoff.reset();
                    self.supervisor.metrics.flushes.get_or_create(&labels(&self.sink)).inc();
                    self.supervisor.ok(&self.sink);
                    if let Flushed::Rewind(p) = outcome {
                        tracing::info!(position = p, "reading again from an earlier position");
                        reader.seek(p);
                        held.end = p;
                    }
                    held.flushed = held.end;
                    held.since = None;
                    return Ok(());
                }
                Err(SinkError::Retryable(e)) => self.retry_wait(backoff, &*e, "delivery failed").await?,
                Err(fatal) => return Err(End::Fatal(fatal)),
            }
        }
    }

    /// Counts and reports a retryable error, then waits the next backoff delay.
    async fn retry_wait(
        &mut self,
        backoff: &mut Backoff,
        error: &(dyn std::error::Error + Send + Sync),
        what: &str,
    ) -> Result<(), End> {
        let delay = backoff.next_delay();
        self.supervisor.metrics.retries.get_or_create(&labels(&self.sink)).inc();
        self.supervisor.retrying(&self.sink, error.to_string());
        tracing::warn!(error = %error, retry_in = ?delay, "{what}; retrying");
        if sleep_or_shutdown(delay, &mut self.shutdown).await { Err(End::Stopped) } else { Ok(()) }
    }
}
