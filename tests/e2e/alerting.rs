//! Alerting end to end: `yaffle standalone` tees points to a separate `yaffle alert` process while its
//! store (a ClickHouse that is not there) and its Kafka cursor (nothing drains it) are failing; the
//! evaluator notifies a webhook, is SIGKILLed, comes back with its alert rebuilt from the log, and
//! resolves it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{BIN, Yaffle, agent, free_port, log_to, show_if_failing};

/// A webhook that records every JSON body posted to it.
fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    (crate::webhook::serve(move |body| seen.lock().unwrap().push(body)), bodies)
}

struct Evaluator {
    child: Child,
    config: String,
}

impl Evaluator {
    fn start(config: &str) -> Self {
        let child = Command::new(BIN)
            .arg("alert")
            .env("YAFFLE_CONFIG", config)
            .env("RUST_LOG", std::env::var("E2E_LOG").unwrap_or("warn".into()))
            .stdout(Stdio::null())
            .stderr(log_to(&Path::new(config).with_extension("log")))
            .spawn()
            .expect("start yaffle alert");
        Self { child, config: config.to_string() }
    }

    fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        *self = Self::start(&self.config.clone());
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        show_if_failing(&Path::new(&self.config).with_extension("log"));
    }
}

/// Waits for a webhook alert with `status` whose `startsAt` is at or after `since` (RFC 3339 compares
/// as text).
fn wait_for(bodies: &Mutex<Vec<serde_json::Value>>, status: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(a) = bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| a["status"] == status)
        {
            return a;
        }
        assert!(Instant::now() < deadline, "no {status} alert at the webhook within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TOO_HOT: &str = r#"
groups:
  - name: e2e
    rules:
      - alert: TooHot
        expr: max by (host) (temp_celsius) > 50
        for: 2s
        annotations:
          summary: '{{ $labels.host }} at {{ $value }}'
"#;

/// Writes `rules` and a config file into `dir` (named after `name`), returning the config's path: an
/// `[alert]` section serving on `port` that notifies `receivers` (a TOML fragment), plus `extra`.
fn config(dir: &Path, name: &str, port: u16, rules: &str, receivers: &str, extra: &str) -> String {
    let rules_file = dir.join(format!("{name}.rules.yml"));
    std::fs::write(&rules_file, rules).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"{extra}
[alert]
bind = "127.0.0.1:{port}"
rule_files = ["{rules}"]
tick = "200ms"
resend_delay = "1s"
{receivers}
"#,
            rules = rules_file.display(),
        ),
    )
    .unwrap();
    file.display().to_string()
}

/// Ingest settings delivering to the evaluator `replicas`, with the store (a ClickHouse that is not
/// there) and the Kafka cursor (nothing drains it) failing.
fn failing_store_delivering_to(replicas: &[u16]) -> String {
    let replicas: Vec<String> = replicas.iter().map(|p| format!("\"http://127.0.0.1:{p}\"")).collect();
    format!(
        r#"
[log.cursors.kafka]
enabled = true
[store]
backend = "clickhouse"
[store.clickhouse]
shards = [["http://127.0.0.1:{dead}"]]
[sinks.alert]
evaluators = [{{ replicas = [{replicas}] }}]
retry_max = "200ms"
"#,
        dead = free_port(),
        replicas = replicas.join(", "),
    )
}

fn write_temp(y: &Yaffle, celsius: f64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let (status, body) = y.write("/write?db=e2e", &format!("temp,host=oven celsius={celsius} {now}"));
    assert_eq!(status, 204, "ingest must accept while the store is down: {body}");
}

#[test]
fn alerts_fire_and_resolve_with_the_store_down_and_survive_an_evaluator_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, bodies) = webhook();
    let port = free_port();
    let file = config(
        dir.path(),
        "yaffle",
        port,
        TOO_HOT,
        &format!("webhooks = [{{ url = \"{hook}\" }}]"),
        &failing_store_delivering_to(&[port]),
    );
    let mut evaluator = Evaluator::start(&file);
    // One file for both; ingest delivers to the separate evaluator rather than running its own.
    let yaffle =
        Yaffle::start(&dir.path().join("data"), &[("YAFFLE_CONFIG", &file), ("YAFFLE_ALERT__RULE_FILES", "[]")]);

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        write_temp(&yaffle, 61.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let firing = wait_for(&bodies, "firing", Duration::from_secs(20));
    assert_eq!(firing["labels"]["alertname"], "TooHot");
    assert_eq!(firing["annotations"]["summary"], "oven at 61");
    let starts_at = firing["startsAt"].as_str().unwrap().to_string();

    // The store never came up: its SQL fails, and yet alerting worked.
    let sql = agent().post(&yaffle.url("/api/v1/sql")).send("SELECT count(*) FROM points").unwrap();
    assert_ne!(sql.status(), 200, "the store is meant to be down in this test");

    evaluator.kill9_and_restart();
    let restarted = Instant::now();
    let alerts = loop {
        write_temp(&yaffle, 61.0);
        let r = agent().get(&format!("http://127.0.0.1:{port}/api/v1/alerts")).call();
        if let Ok(mut r) = r
            && r.status() == 200
        {
            let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
            if alerts.iter().any(|a| a["state"] == "firing") {
                break alerts;
            }
        }
        assert!(restarted.elapsed() < Duration::from_secs(20), "the restarted evaluator did not rebuild the alert");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Rebuilt from the replayed log, not started afresh: it has been active since before the kill.
    let active_at = alerts[0]["activeAt"].as_str().unwrap();
    if sortable(active_at) > sortable(&starts_at) {
        let lines = |url: String, what: &str| {
            let text = agent().get(&url).call().map(|mut r| r.body_mut().read_to_string().unwrap()).unwrap_or_default();
            text.lines().filter(|l| l.contains(what) && !l.starts_with('#')).collect::<Vec<_>>().join("; ")
        };
        panic!(
            "activeAt {active_at} should be no later than the first startsAt {starts_at}: evaluator {}, ingest {}",
            lines(format!("http://127.0.0.1:{port}/metrics"), "samples"),
            lines(yaffle.url("/metrics"), "alert_sink"),
        );
    }

    bodies.lock().unwrap().clear();
    write_temp(&yaffle, 20.0);
    let resolved = wait_for(&bodies, "resolved", Duration::from_secs(20));
    assert_eq!(resolved["labels"]["host"], "oven");
}

/// An RFC 3339 UTC time as text that sorts in time order whatever its fractional digits.
fn sortable(rfc3339: &str) -> String {
    let t = rfc3339.trim_end_matches('Z');
    let (seconds, fraction) = t.split_once('.').unwrap_or((t, ""));
    format!("{seconds}.{fraction:0<9}")
}

/// GETs a JSON document from `url`, `None` when nothing answers yet.
fn get_json(url: &str) -> Option<serde_json::Value> {
    let mut r = agent().get(url).call().ok()?;
    (r.status() == 200).then(|| serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap())
}

/// The alerts an evaluator on `port` lists.
fn alerts(port: u16) -> Vec<serde_json::Value> {
    get_json(&format!("http://127.0.0.1:{port}/api/v1/alerts"))
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
}

/// Polls `check` every 100 ms until it returns something, failing after `timeout` with `what`.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_evaluator_pair_both_evaluate_and_alertmanager_deduplicates_them() {
    crate::support::require("prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let (hook, bodies) = webhook();
    let am = crate::alertmanager::start(&hook);
    let (a, b) = (free_port(), free_port());
    let receivers = format!("alertmanagers = [{{ url = \"{}\" }}]", am.url);
    let mut first = Evaluator::start(&config(dir.path(), "a", a, TOO_HOT, &receivers, ""));
    let _second = Evaluator::start(&config(dir.path(), "b", b, TOO_HOT, &receivers, ""));
    let ingest = config(dir.path(), "ingest", free_port(), TOO_HOT, "", &failing_store_delivering_to(&[a, b]));
    let yaffle =
        Yaffle::start(&dir.path().join("data"), &[("YAFFLE_CONFIG", &ingest), ("YAFFLE_ALERT__RULE_FILES", "[]")]);

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        write_temp(&yaffle, 61.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(&bodies, "firing", Duration::from_secs(20));
    // Both replicas saw every point and fire the same alert...
    for port in [a, b] {
        eventually(&format!("replica {port} firing"), Duration::from_secs(10), || {
            alerts(port).iter().any(|a| a["state"] == "firing").then_some(())
        });
    }
    // ...which Alertmanager holds once and notifies once per group update.
    let held = get_json(&format!("{}/api/v2/alerts", am.url)).unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    for body in bodies.lock().unwrap().iter() {
        assert_eq!(body["alerts"].as_array().unwrap().len(), 1, "duplicate alerts in one notification: {body}");
    }

    // One replica gone: the other alone resolves the alert.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    bodies.lock().unwrap().clear();
    write_temp(&yaffle, 20.0);
    let resolved = wait_for(&bodies, "resolved", Duration::from_secs(20));
    assert_eq!(resolved["labels"]["host"], "oven");
}

const PENDING_FOR_AN_HOUR: &str = r#"
groups:
  - name: reload
    rules:
      - alert: Hot
        expr: temp_celsius > 50
        for: 1h
"#;

#[test]
fn reloads_keep_the_state_of_unchanged_rules_and_refuse_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = config(dir.path(), "yaffle", port, PENDING_FOR_AN_HOUR, "", "");
    let rules_file = dir.path().join("yaffle.rules.yml");
    let yaffle = Yaffle::start(&dir.path().join("data"), &[("YAFFLE_CONFIG", &file)]);
    let api = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let rules = || -> Vec<String> {
        get_json(&api("/api/v1/rules")).unwrap()["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["query"].as_str().unwrap().to_string())
            .collect()
    };
    let pending = |what: &str| {
        eventually(what, Duration::from_secs(10), || {
            write_temp(&yaffle, 61.0);
            alerts(port).into_iter().find(|a| a["state"] == "pending").map(|a| a["activeAt"].clone())
        })
    };
    let reloads = || -> u64 {
        let text = agent().get(&yaffle.url("/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
        text.lines().find_map(|l| l.strip_prefix("yaffle_alert_reloads_total ")).unwrap().parse().unwrap()
    };
    let active_at = pending("the Hot alert pending");

    // A rule added, the old one untouched: POST /-/reload keeps Hot pending since the same moment.
    std::fs::write(&rules_file, format!("{PENDING_FOR_AN_HOUR}      - alert: Cold\n        expr: temp_celsius < 0\n"))
        .unwrap();
    let r = agent().post(&api("/-/reload")).send_empty().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rules(), ["temp_celsius > 50", "temp_celsius < 0"]);
    assert_eq!(pending("Hot still pending"), active_at);

    // A broken file is refused with the rule named, and the running rules stay.
    std::fs::write(
        &rules_file,
        format!("{PENDING_FOR_AN_HOUR}      - alert: Broken\n        expr: rate(temp_celsius)\n"),
    )
    .unwrap();
    let mut r = agent().post(&api("/-/reload")).send_empty().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 500, "{text}");
    assert!(text.contains("Broken") && text.contains("yaffle.rules.yml"), "{text}");
    assert_eq!(rules(), ["temp_celsius > 50", "temp_celsius < 0"]);
    assert_eq!(pending("Hot pending after a refused reload"), active_at);

    // An edited file is picked up without being told; the changed rule starts afresh.
    std::fs::write(&rules_file, PENDING_FOR_AN_HOUR.replace("> 50", "> 40")).unwrap();
    eventually("the edited file reloaded", Duration::from_secs(10), || {
        (rules() == ["temp_celsius > 40"]).then_some(())
    });
    assert_ne!(pending("the changed rule pending again"), active_at);

    // SIGHUP reloads too.
    let before = reloads();
    let hup = Command::new("kill").args(["-HUP", &yaffle.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    eventually("a reload on SIGHUP", Duration::from_secs(10), || (reloads() > before).then_some(()));
}

/// `yaffle rules check` agrees with `promtool check rules` on the shipped examples, and names the file,
/// the rule and the construct it refuses.
#[test]
fn rules_check_reports_and_exits_like_promtool() {
    crate::support::require("promtool");
    let example = crate::support::repo("rules/example.yml");
    let example = example.to_str().unwrap();
    let promtool = Command::new("promtool").args(["check", "rules", example]).output().unwrap();
    let ours = Command::new(BIN).args(["rules", "check", example]).output().unwrap();
    assert!(promtool.status.success(), "{}", String::from_utf8_lossy(&promtool.stderr));
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&promtool.stdout));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "groups:\n  - name: g\n    rules:\n      - alert: Pinned\n        expr: up @ 100 > 0\n")
        .unwrap();
    let ours = Command::new(BIN).args(["rules", "check", example, broken.to_str().unwrap()]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&ours.stderr));
    assert_eq!(ours.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("SUCCESS: 5 rules found") && stdout.contains("FAILED"), "{stdout}");
    for part in ["broken.yml", "Pinned", "@ modifier"] {
        assert!(stderr.contains(part), "{part} not named in: {stderr}");
    }
    // Promtool accepts it (`@` is PromQL); only the stream evaluator refuses it.
    assert!(Command::new("promtool").args(["check", "rules"]).arg(&broken).output().unwrap().status.success());
}

/// Recording rules in standalone: their results go back through the write path, land in the store
/// as the series the rule names, and PromQL reads them like any other.
#[test]
fn recording_rule_results_are_written_back_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: rec\n    interval: 1s\n    rules:\n      - record: host:temp:max\n        expr: max by (host) (temp_celsius)\n        labels:\n          via: rule\n",
    )
    .unwrap();
    let yaffle = Yaffle::start(
        &dir.path().join("data"),
        &[
            ("YAFFLE_ALERT__RULE_FILES", &format!("[{}]", rules.display())),
            ("YAFFLE_ALERT__BIND", &format!("127.0.0.1:{}", free_port())),
            ("YAFFLE_ALERT__TICK", "200ms"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recorded = serde_json::Value::Null;
    while Instant::now() < deadline {
        write_temp(&yaffle, 42.0);
        std::thread::sleep(Duration::from_millis(200));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let url = format!("{}?query=host:temp:max&time={now:.3}", yaffle.url("/api/v1/query"));
        if let Some(body) = get_json(&url)
            && body["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
        {
            recorded = body["data"]["result"][0].clone();
            break;
        }
    }
    assert_eq!(recorded["metric"]["__name__"], "host:temp:max", "no recorded series within 30 s: {recorded}");
    assert_eq!(recorded["metric"]["via"], "rule");
    assert_eq!(recorded["value"][1], "42");
    let rows =
        yaffle.sql("SELECT count(*) AS n FROM points WHERE database = 'prometheus' AND measurement = 'host:temp:max'");
    assert!(rows[0]["n"].as_u64().unwrap() >= 1, "{rows:?}");
}
