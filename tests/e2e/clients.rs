//! Real agents push to Yaffle, and SQL returns exactly what they pushed.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Yaffle, agent, free_port, repo, require};

const TOKEN: &str = "e2e-token";

fn run_client(script: &str, port: u16) {
    require("python3");
    let out = Command::new("python3")
        .arg(repo("tests/clients").join(script))
        .arg(port.to_string())
        .arg(TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed (missing packages? run scripts/test-deps):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn with_auth(dir: &std::path::Path) -> Yaffle {
    Yaffle::start_with_token(dir, TOKEN)
}

#[test]
fn influxdb_v1_client_with_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let yaffle = with_auth(dir.path());
    run_client("influx_v1.py", yaffle.port);
    assert_eq!(yaffle.wait_count("database = 'clientv1'", 400, Duration::from_secs(20)), 400);
    let rows = yaffle.sql(
        "SELECT CAST(time AS BIGINT) AS t, series_key, field, value, value_int, value_bool, value_str \
         FROM points WHERE database = 'clientv1'",
    );
    let got: BTreeSet<String> = rows.iter().map(|r| r.to_string()).collect();
    let mut want = BTreeSet::new();
    for i in 0..100i64 {
        let t = (1_700_000_000_000 + i * 1000) * 1_000_000;
        let key = r"clientv1/weather,city=Oslo,station=s\ 1";
        let row = |field: &str,
                   value: serde_json::Value,
                   int: serde_json::Value,
                   b: serde_json::Value,
                   s: serde_json::Value| {
            serde_json::json!({"t": t, "series_key": key, "field": field, "value": value, "value_int": int, "value_bool": b, "value_str": s}).to_string()
        };
        let null = serde_json::Value::Null;
        want.insert(row("temp", (i as f64 + 0.5).into(), null.clone(), null.clone(), null.clone()));
        want.insert(row("count", (i as f64).into(), i.into(), null.clone(), null.clone()));
        want.insert(row("ok", null.clone(), null.clone(), (i % 2 == 0).into(), null.clone()));
        want.insert(row("note", null.clone(), null.clone(), null.clone(), format!("n,{i}").into()));
    }
    assert_eq!(got, want);
}

#[test]
fn influxdb_v2_client_with_token() {
    let dir = tempfile::tempdir().unwrap();
    let yaffle = with_auth(dir.path());
    run_client("influx_v2.py", yaffle.port);
    assert_eq!(yaffle.wait_count("database = 'clientv2'", 100, Duration::from_secs(20)), 100);
    let rows = yaffle.sql(
        "SELECT CAST(time AS BIGINT) AS t, tags['room'] AS room, field, value, value_int FROM points \
         WHERE database = 'clientv2' ORDER BY t, field",
    );
    let mut want = Vec::new();
    for i in 0..50i64 {
        let t = (1_700_000_000 + i) * 1_000_000_000;
        let room = format!("r{}", i % 3);
        want.push(serde_json::json!({"t": t, "room": room, "field": "n", "value": i as f64, "value_int": i}));
        want.push(serde_json::json!({"t": t, "room": room, "field": "temp", "value": i as f64, "value_int": null}));
    }
    assert_eq!(rows, want);
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_remote_write_delivers_exactly_what_prometheus_scraped() {
    require("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let yaffle = Yaffle::start(&dir.path().join("yaffle"), &[]);
    let prom_port = free_port();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: self\n    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n\
         remote_write:\n  - url: http://127.0.0.1:{}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s}}\n",
        yaffle.port
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Let Prometheus scrape itself a few times.
    let http = agent();
    let prom_query = |q: &str, time: f64| -> serde_json::Value {
        let url = format!("http://127.0.0.1:{prom_port}/api/v1/query");
        match http.get(&url).query("query", q).query("time", time.to_string()).call() {
            Ok(mut r) if r.status() == 200 => serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
            _ => serde_json::Value::Null,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (at, samples) = loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let v = prom_query("up{job=\"self\"}[10m]", now);
        let values = v["data"]["result"][0]["values"].as_array().cloned().unwrap_or_default();
        if values.len() >= 5 {
            break (now, values);
        }
        assert!(Instant::now() < deadline, "Prometheus did not scrape itself 5 times in 60 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    let want: BTreeSet<(i64, String)> = samples
        .iter()
        .map(|s| ((s[0].as_f64().unwrap() * 1000.0).round() as i64, s[1].as_str().unwrap().to_string()))
        .collect();
    let at_ns = (at * 1e9) as i64;
    let filter = format!(
        "database = 'prometheus' AND measurement = 'up' AND tags['job'] = 'self' AND CAST(time AS BIGINT) <= {at_ns}"
    );
    let stored = yaffle.wait_count(&filter, want.len() as u64, Duration::from_secs(60));
    assert_eq!(stored, want.len() as u64, "remote_write delivered {stored} of {} samples", want.len());
    let rows = yaffle.sql(&format!(
        "SELECT CAST(time AS BIGINT) / 1000000 AS ms, value, tags['instance'] AS instance, field FROM points WHERE {filter}"
    ));
    let got: BTreeSet<(i64, String)> =
        rows.iter().map(|r| (r["ms"].as_i64().unwrap(), format!("{}", r["value"].as_f64().unwrap()))).collect();
    assert_eq!(got, want);
    assert!(rows.iter().all(|r| r["instance"] == format!("127.0.0.1:{prom_port}") && r["field"] == "value"));
    // Metric names are kept as Prometheus sent them.
    let names = yaffle.sql("SELECT count(DISTINCT measurement) AS n FROM points WHERE measurement LIKE 'prometheus_%'");
    assert!(names[0]["n"].as_u64().unwrap() > 20);
}
