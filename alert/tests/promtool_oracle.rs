//! Prometheus' own rule tester is the oracle: for a set of rules and input series, the alerts Yaffle's
//! stream evaluator fires at each minute (event time) are written out as a `promtool test rules` file,
//! and promtool must agree with every one of them, labels and annotations included.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use yaffle_alert::alerting::AlertState;
use yaffle_alert::{AlertConfig, Evaluator, Metrics, RuleSet};
use yaffle_core::point::FieldValue;
use yaffle_core::{Point, SeriesKey};

const MINUTE_NS: i64 = 60_000_000_000;
const STEPS: usize = 90;

const RULES: &str = r#"
groups:
  - name: oracle
    interval: 1m
    rules:
      - alert: HighValue
        expr: gauge > 60
        for: 3m
        labels:
          severity: warn
        annotations:
          summary: '{{ $labels.host }} at {{ printf "%.0f" $value }}'
      - alert: FastCounter
        expr: sum by (job) (rate(requests_total[5m])) > 0.5
        for: 2m
        keep_firing_for: 2m
      - alert: HeartbeatMissing
        expr: absent(heartbeat{job="batch"})
        for: 1m
      - alert: Swing
        expr: max_over_time(gauge[3m]) - min_over_time(gauge[3m]) > 40
      - alert: Combined
        expr: gauge > 30 and on(host) increase(requests_total[2m]) > 40 unless gauge{host="c"}
      - alert: Quantile
        expr: quantile_over_time(0.9, gauge[5m]) >= 70
        labels:
          level: '{{ if gt $value 80.0 }}high{{ else }}mid{{ end }}'
      - alert: CountPerJob
        expr: count by (job) (gauge >= 50) >= 2
"#;

/// A small deterministic generator, so the input is varied but the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// An input series: metric name, labels, and one optional value per minute.
type Series = (String, Vec<(&'static str, String)>, Vec<Option<f64>>);

fn series() -> Vec<Series> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    for (host, job) in [("a", "api"), ("b", "api"), ("c", "web")] {
        let mut g = 50i64;
        let gauge: Vec<Option<f64>> = (0..STEPS)
            .map(|i| {
                g = (g + rng.next(31) as i64 - 15).clamp(0, 100);
                // A gap now and then: some minutes have no sample.
                (i % 17 != 5).then_some(g as f64)
            })
            .collect();
        out.push(("gauge".to_string(), vec![("host", host.to_string()), ("job", job.to_string())], gauge));
        let mut c = 0u64;
        let counter: Vec<Option<f64>> = (0..STEPS)
            .map(|i| {
                c = if i == 40 && host == "b" { 0 } else { c + rng.next(if i > 30 && i < 60 { 90 } else { 20 }) };
                Some(c as f64)
            })
            .collect();
        out.push(("requests_total".to_string(), vec![("host", host.to_string()), ("job", job.to_string())], counter));
    }
    let heartbeat = (0..STEPS).map(|i| (i < 20 || (50..60).contains(&i)).then_some(1.0)).collect();
    out.push(("heartbeat".to_string(), vec![("job", "batch".to_string())], heartbeat));
    out
}

fn promtool_values(values: &[Option<f64>]) -> String {
    values.iter().map(|v| v.map_or_else(|| "_".to_string(), |v| format!("{v}"))).collect::<Vec<_>>().join(" ")
}

#[test]
fn promtool_agrees_with_the_stream_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, RULES).unwrap();
    let rules = Arc::new(RuleSet::load(std::slice::from_ref(&rules_path), Duration::from_secs(60)).unwrap());
    let names: Vec<String> = rules.groups[0].rules.iter().map(|r| r.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let config = AlertConfig { max_future: Duration::from_secs(0), ..AlertConfig::default() };
    let mut evaluator = Evaluator::new(rules, &config, metrics);

    let input = series();
    let mut tests = Vec::new();
    let mut fired = 0;
    for step in 0..STEPS {
        let t = step as i64 * MINUTE_NS;
        let points = input
            .iter()
            .filter_map(|(name, labels, values)| {
                let v = values[step]?;
                let tags = labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                let key = Arc::new(SeriesKey::new("db", name.as_str(), tags));
                Some(Point::new(key, vec![("value".to_string(), FieldValue::Float(v))], t))
            })
            .collect::<Vec<_>>();
        evaluator.ingest(&points);
        evaluator.advance_to(t);
        evaluator.evaluate(true);
        let mut firing: BTreeMap<&str, Vec<serde_json::Value>> =
            names.iter().map(|n| (n.as_str(), Vec::new())).collect();
        for state in evaluator.states().iter().flatten() {
            for a in state.active.values().filter(|a| a.state == AlertState::Firing) {
                let labels: BTreeMap<&str, &str> = a.labels.iter().filter(|(k, _)| *k != "alertname").collect();
                let annotations: BTreeMap<&str, &str> = a.annotations.iter().collect();
                firing
                    .get_mut(state.rule.name.as_str())
                    .unwrap()
                    .push(serde_json::json!({"exp_labels": labels, "exp_annotations": annotations}));
                fired += 1;
            }
        }
        for (name, alerts) in firing {
            tests.push(serde_json::json!({"eval_time": format!("{step}m"), "alertname": name, "exp_alerts": alerts}));
        }
    }
    assert!(fired > 50, "the input must make alerts fire for the comparison to mean something ({fired})");

    let series: Vec<serde_json::Value> = input
        .iter()
        .map(|(name, labels, values)| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            serde_json::json!({"series": format!("{name}{{{}}}", labels.join(",")), "values": promtool_values(values)})
        })
        .collect();
    let test_file = serde_json::json!({
        "rule_files": [rules_path.display().to_string()],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    });
    let test_path = dir.path().join("oracle_test.yml");
    std::fs::write(&test_path, serde_yaml::to_string(&test_file).unwrap()).unwrap();
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(&test_path)
        .output()
        .expect("promtool must be installed (scripts/test-deps installs Debian's prometheus)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let kept = dir.keep();
        panic!("promtool disagrees (files kept in {}):\n{}", kept.display(), &text[..text.len().min(6000)]);
    }
    assert!(text.contains("SUCCESS"), "{text}");
}
