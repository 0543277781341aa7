//! The Kafka sink's task.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use yaffle_core::batch::DecodeError;
use yaffle_core::strategy::Distribution;
use yaffle_core::{Batch, Point};
use yaffle_log::sink::{Delivery, DriverConfig, Flushed, SinkError, Supervisor};
use yaffle_log::{CursorName, Log, Record};

use super::KafkaSinkConfig;
use crate::metrics::Metrics;

/// Reads the `kafka` cursor and produces to the topic, on the sink runtime ([`yaffle_log::sink`]).
#[derive(Debug)]
pub struct KafkaSink {
    log: Arc<Log>,
    config: KafkaSinkConfig,
    metrics: Arc<Metrics>,
}

/// One partition's message of a step.
struct Message {
    partition: i32,
    payload: Vec<u8>,
    timestamp_ms: i64,
    points: u64,
}

impl KafkaSink {
    /// A sink; call [`KafkaSink::spawn`] to start it.
    pub fn new(log: Arc<Log>, config: KafkaSinkConfig, metrics: Arc<Metrics>) -> Self {
        Self { log, config, metrics }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.config.compression.as_str())
            .set("linger.ms", self.config.linger.as_millis().to_string())
            .set("message.timeout.ms", self.config.delivery_timeout.as_millis().to_string())
            // Values are cut to max_message_bytes; the slack covers the record's own framing.
            .set("message.max.bytes", (self.config.max_message_bytes.as_u64() + 16_384).to_string());
        c
    }

    /// Runs the sink `kafka` under `supervisor` until `shutdown` turns true.
    pub fn spawn(self, supervisor: &Arc<Supervisor>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let c = &self.config;
        let driver = DriverConfig {
            read_bytes: c.read_bytes.as_u64() as usize,
            flush_interval: Duration::from_secs(1),
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
        };
        let log = Arc::clone(&self.log);
        let sink = Arc::new(self);
        let make = move || KafkaDelivery {
            sink: Arc::clone(&sink),
            producer: None,
            distribution: None,
            by_partition: Vec::new(),
            timestamp_ms: 0,
            pending: Vec::new(),
            failures: 0,
        };
        supervisor.spawn("kafka", log, CursorName::Kafka, driver, make, shutdown)
    }

    /// Creates the topic if it is absent; returns its partition count.
    async fn ensure_topic(&self, producer: &FutureProducer) -> Result<usize, String> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().map_err(|e| e.to_string())?;
        let topic = NewTopic::new(
            &self.config.topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics([&topic], &options).await.map_err(|e| e.to_string())? {
            match result {
                Ok(name) => tracing::info!(topic = %name, partitions = self.config.partitions, "created the topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("cannot create topic {name}: {code}")),
            }
        }
        let client = producer.clone();
        let name = self.config.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(Some(&name), Timeout::After(Duration::from_secs(10)))
        })
        .await
        .expect("metadata task")
        .map_err(|e| e.to_string())?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(format!("topic {} has no partitions yet", self.config.topic));
        }
        if partitions != self.config.partitions as usize {
            tracing::warn!(
                partitions,
                configured = self.config.partitions,
                "the existing topic's partition count wins"
            );
        }
        Ok(partitions)
    }
}

/// The sink's delivery: points routed per partition, produced as one message per partition (split
/// to stay under `max_message_bytes`) and committed once the broker acknowledged them all.
struct KafkaDelivery {
    sink: Arc<KafkaSink>,
    producer: Option<FutureProducer>,
    distribution: Option<Distribution>,
    /// Points held per partition.
    by_partition: Vec<Vec<Point>>,
    /// The ingest time of the last record held: the messages' timestamp.
    timestamp_ms: i64,
    /// Messages built and not yet acknowledged, kept for retries.
    pending: Vec<Message>,
    /// Deliveries failed in a row.
    failures: u32,
}

/// Deliveries failed in a row after which the producer is replaced: one that failed the same messages
/// this often may be wedged (a broker that came back without the producer's state), and a new one
/// resends them.
const FAILURES_BEFORE_NEW_PRODUCER: u32 = 3;

impl Delivery for KafkaDelivery {
    async fn start(&mut self) -> Result<u64, SinkError> {
        let sink = &self.sink;
        let distribution = Distribution::new(&sink.config.distribution)
            .map_err(|e| SinkError::fatal(format!("sinks.kafka.distribution: {e}")))?;
        let producer: FutureProducer =
            sink.client_config().create().map_err(|e| SinkError::fatal(format!("sinks.kafka: {e}")))?;
        let partitions = sink.ensure_topic(&producer).await.map_err(SinkError::retryable)?;
        tracing::info!(partitions, topic = %sink.config.topic, "kafka sink ready");
        self.by_partition = vec![Vec::new(); partitions];
        self.producer = Some(producer);
        self.distribution = Some(distribution);
        Ok(sink.log.cursor_position(CursorName::Kafka))
    }

    fn add(&mut self, record: &Record) -> Result<(), DecodeError> {
        let distribution = self.distribution.as_ref().expect("set by start");
        let partitions = self.by_partition.len();
        for p in Batch::decode(&record.payload)?.points {
            let partition = Distribution::target(distribution.route(&p.series, p.series_id), partitions);
            self.by_partition[partition].push(p);
        }
        self.timestamp_ms = record.ingest_time / 1_000_000;
        Ok(())
    }

    fn flush_now(&self, _due: bool) -> bool {
        true // a step's messages go out at once; the producer's linger batches them
    }

    async fn flush(&mut self, end: u64) -> Result<Flushed, SinkError> {
        if self.pending.is_empty() {
            let max = self.sink.config.max_message_bytes.as_u64() as usize;
            for (partition, points) in self.by_partition.iter_mut().enumerate() {
                let points = std::mem::take(points);
                if !points.is_empty() {
                    messages(partition as i32, points, self.timestamp_ms, max, &mut self.pending)?;
                }
            }
        }
        if self.failures >= FAILURES_BEFORE_NEW_PRODUCER {
            let producer: FutureProducer = self.sink.client_config().create().map_err(SinkError::retryable)?;
            tracing::warn!(failures = self.failures, "replacing the Kafka producer after failed deliveries");
            // Dropping a producer waits for its queue: off the async workers.
            let old = self.producer.replace(producer);
            tokio::task::spawn_blocking(move || drop(old));
            self.failures = 0;
        }
        if let Err(e) = self.deliver().await {
            self.failures += 1;
            return Err(e);
        }
        self.failures = 0;
        self.sink.log.commit(CursorName::Kafka, end)?;
        Ok(Flushed::Done)
    }
}

impl KafkaDelivery {
    /// Sends the pending messages; those the broker did not acknowledge stay pending.
    async fn deliver(&mut self) -> Result<(), SinkError> {
        let (producer, sink) = (self.producer.as_ref().expect("set by start"), &self.sink);
        let metrics = &sink.metrics;
        let mut futures = Vec::with_capacity(self.pending.len());
        for m in &self.pending {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&sink.config.topic)
                .partition(m.partition)
                .payload(m.payload.as_slice())
                .timestamp(m.timestamp_ms);
            futures.push(producer.send_result(record).map_err(|(e, _)| e));
        }
        let mut failed = Vec::new();
        let mut error = None;
        for (m, f) in std::mem::take(&mut self.pending).into_iter().zip(futures) {
            let outcome = match f {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    metrics.kafka_points.inc_by(m.points);
                    metrics.kafka_messages.inc();
                    metrics.kafka_bytes.inc_by(m.payload.len() as u64);
                }
                Err(e) => {
                    metrics.kafka_errors.inc();
                    tracing::warn!(partition = m.partition, error = %e, "kafka delivery failed");
                    error.get_or_insert(e);
                    failed.push(m);
                }
            }
        }
        self.pending = failed;
        // An idempotent producer can fail for good (a broker that lost its producer state comes back,
        // say): every later send on it fails. The sink is then restarted with a new producer; the
        // messages not acknowledged are built again from the log.
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(SinkError::fatal(format!(
                "the Kafka producer failed for good ({code:?}: {reason}); starting a new one"
            )));
        }
        match error {
            None => Ok(()),
            // The broker refuses the size for good: retrying the same message cannot help.
            Some(e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                Err(SinkError::fatal(format!("{e}: lower sinks.kafka.max_message_bytes to the broker's limit")))
            }
            Some(e) => Err(SinkError::retryable(e)),
        }
    }
}

/// Splits a partition's points into messages of at most `max` bytes.
fn messages(
    partition: i32,
    points: Vec<Point>,
    timestamp_ms: i64,
    max: usize,
    out: &mut Vec<Message>,
) -> Result<(), SinkError> {
    let parts = Batch::encode_within(points, max)
        .map_err(|e| SinkError::fatal(format!("{e} (sinks.kafka.max_message_bytes)")))?;
    out.extend(parts.into_iter().map(|(batch, payload)| Message {
        partition,
        payload,
        timestamp_ms,
        points: batch.points.len() as u64,
    }));
    Ok(())
}
