//! End-to-end alert latency: from the POST of a point that crosses a threshold to a real Alertmanager
//! (Debian `prometheus-alertmanager`, `group_wait: 0s`, a group per alert) delivering the alert to a
//! webhook. The real `yaffle standalone` runs its in-process evaluator on the log's alert cursor.
//!
//! Each sample writes one new series over the threshold (`temp,host=hN celsius=99`) and waits for
//! Alertmanager's webhook call naming `hN`; samples are spaced so one never waits for the previous.
//! Prints p50, p90, p99 and max, then the same split at the POST's answer. Run: `cargo bench --bench alert_latency` (release build), or
//! `cargo test --workspace --bench alert_latency` to reuse the test build. `YAFFLE_BENCH_SAMPLES`
//! sets the number of samples (default 200).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../tests/peers/alertmanager.rs"]
mod alertmanager;
#[path = "../tests/peers/webhook.rs"]
mod webhook;

const RULES: &str = "groups:\n  - name: latency\n    rules:\n      - alert: TooHot\n        expr: temp_celsius > 50\n";

fn main() {
    let samples: usize = std::env::var("YAFFLE_BENCH_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = Arc::clone(&arrived);
    let hook = webhook::serve(move |body| {
        let now = Instant::now();
        let mut seen = seen.lock().unwrap();
        for a in body["alerts"].as_array().into_iter().flatten().filter(|a| a["status"] == "firing") {
            if let Some(host) = a["labels"]["host"].as_str() {
                seen.entry(host.to_string()).or_insert(now);
            }
        }
    });
    let am = alertmanager::start_grouped_by(&hook, "['...']");

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("latency.rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let port = free_port();
    let mut yaffle = Command::new(env!("CARGO_BIN_EXE_yaffle"))
        .arg("standalone")
        .env_remove("YAFFLE_BENCH_SAMPLES") // yaffle refuses YAFFLE_* keys it does not know
        .env("YAFFLE_DATA_DIR", dir.path().join("data"))
        .env("YAFFLE_HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("YAFFLE_ALERT__BIND", format!("127.0.0.1:{}", free_port()))
        .env("YAFFLE_ALERT__RULE_FILES", format!("[\"{}\"]", rules.display()))
        .env("YAFFLE_ALERT__ALERTMANAGERS", format!("[{{url=\"{}\"}}]", am.url))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start yaffle");
    let agent = ureq::Agent::new_with_defaults();
    let write = |line: &str| {
        agent.post(&format!("http://127.0.0.1:{port}/write?db=bench")).send(line).map(|r| r.status().as_u16())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while write("warmup x=1").ok() != Some(204) {
        assert!(Instant::now() < deadline, "yaffle did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (mut latencies, mut acks) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let host = format!("h{i}");
        let posted = Instant::now();
        assert_eq!(write(&format!("temp,host={host} celsius=99 {now}")).unwrap(), 204);
        acks.push(posted.elapsed());
        let deadline = posted + Duration::from_secs(10);
        let at = loop {
            if let Some(&at) = arrived.lock().unwrap().get(&host) {
                break at;
            }
            assert!(Instant::now() < deadline, "no alert for {host} within 10 s");
            std::thread::sleep(Duration::from_micros(200));
        };
        latencies.push(at.duration_since(posted));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = yaffle.kill();
    let _ = yaffle.wait();

    report(&format!("POST to Alertmanager webhook, {samples} samples"), latencies.clone());
    let after: Vec<Duration> = latencies.iter().zip(&acks).map(|(l, a)| l.saturating_sub(*a)).collect();
    report("of which the POST's answer (durable in the log, fsync included)", acks);
    report("and from the answer to the webhook (log, evaluator, Alertmanager)", after);
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "{what}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
