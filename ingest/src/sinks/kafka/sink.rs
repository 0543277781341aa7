//! The Kafka sink's task.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::watch;
use tracing::instrument;
use yaffle_core::Batch;
use yaffle_core::strategy::Distribution;

use super::KafkaSinkConfig;
use crate::error::IngestError;
use crate::metrics::Metrics;
use crate::sinks::{Backoff, sleep_or_shutdown};
use yaffle_log::{CursorName, Log, Record};

/// Reads the `kafka` cursor and produces to the topic.
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
    /// A sink; call [`KafkaSink::run`] to start it.
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
            .set("message.max.bytes", (16 << 20).to_string());
        c
    }

    /// Runs until `shutdown` turns true.
    #[instrument(name = "kafka_sink", skip_all, fields(topic = %self.config.topic))]
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), IngestError> {
        let distribution = Distribution::new(&self.config.distribution).map_err(IngestError::Config)?;
        let producer: FutureProducer =
            self.client_config().create().map_err(|e| IngestError::Config(format!("sinks.kafka: {e}")))?;
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        let partitions = loop {
            match self.ensure_topic(&producer).await {
                Ok(n) => break n,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka not ready, retrying");
                    if sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        backoff.reset();
        let mut reader = self.log.reader(CursorName::Kafka);
        tracing::info!(position = reader.position(), partitions, "kafka sink started");
        let read_bytes = self.config.read_bytes.as_u64() as usize;
        loop {
            let records = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                r = reader.next(read_bytes, Duration::from_secs(1)) => r?,
            };
            let Some(last) = records.last() else { continue };
            let messages = self.messages(&records, &distribution, partitions)?;
            if !self.deliver(&producer, messages, &mut backoff, &mut shutdown).await {
                return Ok(());
            }
            self.log.commit(CursorName::Kafka, last.next)?;
        }
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

    /// One message per partition with the points of `records` routed to it.
    fn messages(
        &self,
        records: &[Record],
        distribution: &Distribution,
        partitions: usize,
    ) -> Result<Vec<Message>, IngestError> {
        let mut by_partition: Vec<Vec<yaffle_core::Point>> = vec![Vec::new(); partitions];
        for r in records {
            let batch = Batch::decode(&r.payload)
                .map_err(|e| IngestError::LogCorrupt { position: r.position, reason: e.to_string() })?;
            for p in batch.points {
                let partition = Distribution::target(distribution.route(&p.series, p.series_id), partitions);
                by_partition[partition].push(p);
            }
        }
        let timestamp_ms = records.last().map_or(0, |r| r.ingest_time / 1_000_000);
        Ok(by_partition
            .into_iter()
            .enumerate()
            .filter(|(_, points)| !points.is_empty())
            .map(|(partition, points)| Message {
                partition: partition as i32,
                points: points.len() as u64,
                payload: Batch::new(points).encode(),
                timestamp_ms,
            })
            .collect())
    }

    /// Sends `messages` until the broker acknowledged every one; false if shutdown came first.
    async fn deliver(
        &self,
        producer: &FutureProducer,
        mut pending: Vec<Message>,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            let mut futures = Vec::with_capacity(pending.len());
            for m in &pending {
                let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&self.config.topic)
                    .partition(m.partition)
                    .payload(m.payload.as_slice())
                    .timestamp(m.timestamp_ms);
                futures.push(producer.send_result(record).map_err(|(e, _)| e.to_string()));
            }
            let mut failed = Vec::new();
            for (m, f) in pending.into_iter().zip(futures) {
                let outcome = match f {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e.to_string()),
                        Err(_) => Err("the producer went away".to_string()),
                    },
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => {
                        self.metrics.kafka_points.inc_by(m.points);
                        self.metrics.kafka_messages.inc();
                        self.metrics.kafka_bytes.inc_by(m.payload.len() as u64);
                    }
                    Err(e) => {
                        self.metrics.kafka_errors.inc();
                        tracing::warn!(partition = m.partition, error = %e, "kafka delivery failed, retrying");
                        failed.push(m);
                    }
                }
            }
            if failed.is_empty() {
                backoff.reset();
                return true;
            }
            if sleep_or_shutdown(backoff.next_delay(), shutdown).await {
                return false;
            }
            pending = failed;
        }
    }
}
