//! A real Alertmanager (Debian `prometheus-alertmanager`) receives Yaffle's alerts, firing then
//! resolved, with the rule's labels and expanded annotations; a plain webhook gets them too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use yaffle_alert::config::Receiver;
use yaffle_alert::{AlertConfig, Metrics, Service};
use yaffle_core::point::FieldValue;
use yaffle_core::{Batch, Point, SeriesKey};

#[path = "../../tests/peers/alertmanager.rs"]
mod alertmanager;

/// A webhook receiver: every body posted to `/<path>` arrives on the channel as `(path, body)`.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/{path}",
            post(
                |State(tx): State<mpsc::UnboundedSender<(String, Value)>>,
                 Path(path): Path<String>,
                 Json(body): Json<Value>| async move {
                    let _ = tx.send((path, body));
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

fn temperature(host: &str, celsius: f64) -> Batch {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
    let key = Arc::new(SeriesKey::new("db", "temp", vec![("host".into(), host.into())]));
    Batch::new(vec![Point::new(key, vec![("celsius".into(), FieldValue::Float(celsius))], now)])
}

/// Waits for the next alert with `status` from `path`, ignoring other notifications.
async fn next_alert(rx: &mut mpsc::UnboundedReceiver<(String, Value)>, path: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (p, body) = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {status} notification from {path} within 30 s"))
            .expect("receiver open");
        if p == path
            && let Some(a) = body["alerts"].as_array().and_then(|a| a.iter().find(|a| a["status"] == status))
        {
            return a.clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_firing_then_resolved_alerts() {
    let (hook, mut notifications) = receiver().await;
    let am = alertmanager::start(&format!("http://{hook}/alertmanager"));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"
groups:
  - name: temperature
    rules:
      - alert: TooHot
        expr: temp_celsius > 50
        labels:
          severity: '{{ if gt $value 80.0 }}critical{{ else }}warning{{ end }}'
        annotations:
          summary: '{{ $labels.host }} is at {{ printf "%.1f" $value }} degrees'
"#,
    )
    .unwrap();
    let config = AlertConfig {
        rule_files: vec![rules],
        tick: Duration::from_millis(100),
        resend_delay: Duration::from_secs(1),
        alertmanagers: vec![Receiver { url: am.url.clone() }],
        webhooks: vec![Receiver { url: format!("http://{hook}/direct") }],
        external_labels: [("dc".to_string(), "eu".to_string())].into(),
        ..AlertConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    let service = Service::start(config, Arc::new(Metrics::new(&mut Registry::default())), stopped).unwrap();

    service.push(temperature("oven", 20.0)).await.unwrap();
    service.push(temperature("kiln", 61.25)).await.unwrap();
    let firing = next_alert(&mut notifications, "alertmanager", "firing").await;
    assert_eq!(
        firing["labels"],
        serde_json::json!({"alertname": "TooHot", "dc": "eu", "host": "kiln", "severity": "warning"})
    );
    assert_eq!(firing["annotations"]["summary"], "kiln is at 61.2 degrees");
    let direct = next_alert(&mut notifications, "direct", "firing").await;
    assert_eq!(direct["labels"]["host"], "kiln");

    service.push(temperature("kiln", 30.0)).await.unwrap();
    let resolved = next_alert(&mut notifications, "alertmanager", "resolved").await;
    assert_eq!(resolved["labels"]["host"], "kiln");
    assert_ne!(resolved["endsAt"], "0001-01-01T00:00:00Z");
    next_alert(&mut notifications, "direct", "resolved").await;
    let _ = stop.send(true);
}
