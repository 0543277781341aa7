//! Delivery: every alert due goes to each Alertmanager (API v2) and each webhook, through a bounded
//! queue per receiver, so a slow or absent receiver delays no other and never the evaluator.
//!
//! A failed request is retried twice (after 100 ms and 1 s), then its alerts are dropped for that
//! receiver and counted: firing alerts are sent again every `resend_delay` anyway, and resolved ones
//! for 15 minutes, as Prometheus does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use crate::config::AlertConfig;
use crate::labels::Labels;
use crate::metrics::{Metrics, ReceiverLabels};

/// Most alerts in one request.
const MAX_BATCH: usize = 256;

/// An alert as sent to Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Labels, external labels included.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// When it started firing (event time).
    pub starts_at: SystemTime,
    /// When it stops being valid: the future while firing, the resolution time once resolved.
    pub ends_at: SystemTime,
    /// Link back to the evaluator.
    pub generator_url: String,
}

impl Notification {
    fn resolved(&self, now: SystemTime) -> bool {
        self.ends_at <= now
    }

    fn to_alertmanager(&self) -> Value {
        json!({
            "labels": map(&self.labels),
            "annotations": map(&self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "generatorURL": self.generator_url,
        })
    }
}

fn map(labels: &Labels) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<Map<_, _>>())
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Alertmanager,
    Webhook,
}

#[derive(Debug)]
struct Queue {
    name: String,
    url: String,
    kind: Kind,
    pending: Mutex<VecDeque<Notification>>,
    wake: Notify,
}

/// The receivers' queues. Sending never blocks.
#[derive(Debug, Clone)]
pub struct Notifier {
    queues: Arc<Vec<Arc<Queue>>>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Starts one delivery task per receiver; they stop when `stop` turns true, after one last attempt
    /// to send what is queued.
    pub fn start(config: &AlertConfig, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Self {
        let mut client = reqwest::Client::builder().timeout(config.notify_timeout);
        if !config.tls_ca.as_os_str().is_empty() {
            // Checked by `AlertConfig::validate`.
            for ca in crate::config::read_ca(&config.tls_ca).unwrap_or_default() {
                client = client.add_root_certificate(ca);
            }
        }
        let client = client.build().expect("http client");
        let receivers = config
            .alertmanagers
            .iter()
            .map(|r| (r.url.trim_end_matches('/').to_string() + "/api/v2/alerts", Kind::Alertmanager, &r.url))
            .chain(config.webhooks.iter().map(|r| (r.url.clone(), Kind::Webhook, &r.url)));
        let mut queues = Vec::new();
        for (url, kind, name) in receivers {
            let q = Arc::new(Queue {
                name: name.clone(),
                url,
                kind,
                pending: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
            });
            tokio::spawn(deliver(
                Arc::clone(&q),
                client.clone(),
                config.external_url.clone(),
                Arc::clone(&metrics),
                stop.clone(),
            ));
            queues.push(q);
        }
        Self { queues: Arc::new(queues), capacity: config.notify_queue, metrics }
    }

    /// Queues alerts for every receiver.
    pub fn send(&self, alerts: &[Notification]) {
        if alerts.is_empty() {
            return;
        }
        for q in self.queues.iter() {
            let labels = ReceiverLabels { receiver: q.name.clone() };
            let mut pending = q.pending.lock().expect("queue lock");
            pending.extend(alerts.iter().cloned());
            let over = pending.len().saturating_sub(self.capacity);
            if over > 0 {
                pending.drain(..over);
                self.metrics.notifications_dropped.get_or_create(&labels).inc_by(over as u64);
                tracing::warn!(receiver = %q.name, dropped = over, "notification queue full, dropped the oldest alerts");
            }
            self.metrics.notification_queue.get_or_create(&labels).set(pending.len() as i64);
            drop(pending);
            q.wake.notify_one();
        }
    }
}

async fn deliver(
    q: Arc<Queue>,
    client: reqwest::Client,
    external_url: String,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let labels = ReceiverLabels { receiver: q.name.clone() };
    loop {
        let batch: Vec<Notification> = {
            let mut pending = q.pending.lock().expect("queue lock");
            let n = pending.len().min(MAX_BATCH);
            let batch = pending.drain(..n).collect();
            metrics.notification_queue.get_or_create(&labels).set(pending.len() as i64);
            batch
        };
        if batch.is_empty() {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = q.wake.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let body = match q.kind {
            Kind::Alertmanager => Value::Array(batch.iter().map(Notification::to_alertmanager).collect()),
            Kind::Webhook => webhook_body(&batch, &external_url),
        };
        let mut delivered = false;
        for (attempt, pause) in
            [Duration::ZERO, Duration::from_millis(100), Duration::from_secs(1)].into_iter().enumerate()
        {
            tokio::time::sleep(pause).await;
            match client.post(&q.url).header("content-type", "application/json").body(body.to_string()).send().await {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => {
                    metrics.notification_errors.get_or_create(&labels).inc();
                    tracing::warn!(receiver = %q.name, status = %r.status(), attempt, "receiver refused alerts");
                }
                Err(e) => {
                    metrics.notification_errors.get_or_create(&labels).inc();
                    tracing::warn!(receiver = %q.name, error = %e, attempt, "sending alerts failed");
                }
            }
        }
        if delivered {
            metrics.notifications.get_or_create(&labels).inc_by(batch.len() as u64);
            tracing::debug!(receiver = %q.name, alerts = batch.len(), "alerts sent");
        } else {
            metrics.notifications_dropped.get_or_create(&labels).inc_by(batch.len() as u64);
        }
    }
}

/// Alertmanager's webhook JSON (version 4), so a receiver written for Alertmanager reads it.
fn webhook_body(batch: &[Notification], external_url: &str) -> Value {
    let now = SystemTime::now();
    let firing = batch.iter().any(|n| !n.resolved(now));
    let common = |f: fn(&Notification) -> &Labels| {
        let first = f(&batch[0]);
        let pairs = first.iter().filter(|(k, v)| batch.iter().all(|n| f(n).get(k) == Some(v)));
        Value::Object(pairs.map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect())
    };
    let alerts: Vec<Value> = batch
        .iter()
        .map(|n| {
            let mut a = n.to_alertmanager();
            a["status"] = json!(if n.resolved(now) { "resolved" } else { "firing" });
            a["fingerprint"] = json!(format!("{:016x}", n.labels.fingerprint()));
            a
        })
        .collect();
    json!({
        "version": "4",
        "receiver": "yaffle",
        "status": if firing { "firing" } else { "resolved" },
        "groupKey": "{}",
        "groupLabels": {},
        "commonLabels": common(|n| &n.labels),
        "commonAnnotations": common(|n| &n.annotations),
        "externalURL": external_url,
        "truncatedAlerts": 0,
        "alerts": alerts,
    })
}
