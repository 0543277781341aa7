//! The Prometheus API against the real oracle: a Prometheus 2.42 and Yaffle hold the same samples
//! (Prometheus from blocks `promtool tsdb create-blocks-from openmetrics` built, Yaffle from line
//! protocol), and a corpus of queries must give the same answers: same status and `errorType`, same
//! result type, the same label sets, values within 1e-9 relative, the same timestamps.
//! `promtool query` and the requests Grafana's data source sends are real clients of the API.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Yaffle, agent, free_port, log_to, require, show_if_failing};

const S: i64 = 1000;
/// Scrape interval of the generated data, in ms.
const STEP_MS: i64 = 30 * S;
/// Two days of data.
const SPAN_MS: i64 = 2 * 86_400 * S;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct GenSeries {
    name: String,
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
}

/// Counters with resets, gauges, a classic histogram and an `up` with gaps, every 30 s (jittered by
/// a few ms) over two days ending at `end_ms`.
fn generate(end_ms: i64) -> Vec<GenSeries> {
    let start = end_ms - SPAN_MS;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let times = |rng: &mut Rng| -> Vec<i64> {
        (0..=SPAN_MS / STEP_MS).map(|i| start + i * STEP_MS + (rng.next() % 40) as i64).collect()
    };
    for job in ["api", "web"] {
        for instance in ["0", "1", "2", "3"] {
            for method in ["get", "post"] {
                let mut v = 0.0;
                let samples = times(&mut rng)
                    .into_iter()
                    .map(|t| {
                        if rng.next().is_multiple_of(2000) {
                            v = 0.0; // a restart
                        } else {
                            v += (rng.next() % 100) as f64;
                        }
                        (t, v)
                    })
                    .collect();
                let labels = vec![
                    ("job".into(), job.into()),
                    ("instance".into(), instance.into()),
                    ("method".into(), method.into()),
                ];
                out.push(GenSeries { name: "http_requests_total".into(), labels, samples });
            }
        }
    }
    for (i, host) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for dc in ["x", "y"] {
            let mut v = 20.0 + i as f64;
            let samples = times(&mut rng)
                .into_iter()
                .map(|t| {
                    v += rng.unit() - 0.5;
                    (t, (v * 1000.0).round() / 1000.0)
                })
                .collect();
            let labels = vec![("host".into(), host.to_string()), ("dc".into(), dc.into())];
            out.push(GenSeries { name: "node_temperature_celsius".into(), labels, samples });
        }
    }
    for job in ["api", "web"] {
        let bounds = ["0.1", "0.5", "1", "+Inf"];
        let mut counts = [0.0f64; 4];
        let ts = times(&mut rng);
        let mut per_bucket: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
        for &t in &ts {
            let mut add = 0.0;
            for (b, c) in counts.iter_mut().enumerate() {
                add += (rng.next() % (5 + b as u64 * 3)) as f64;
                *c += add;
                per_bucket[b].push((t, *c));
            }
        }
        for (b, samples) in per_bucket.into_iter().enumerate() {
            let labels = vec![("job".into(), job.into()), ("le".into(), bounds[b].into())];
            out.push(GenSeries { name: "request_duration_seconds_bucket".into(), labels, samples });
        }
    }
    for job in ["api", "web"] {
        for instance in ["0", "1"] {
            // Down (no samples) for an hour in the middle, and 0 for a while before that.
            let samples = times(&mut rng)
                .into_iter()
                .filter(|t| !(end_ms - 20 * 3600 * S..end_ms - 19 * 3600 * S).contains(t))
                .map(|t| (t, if (end_ms - 22 * 3600 * S..end_ms - 21 * 3600 * S).contains(&t) { 0.0 } else { 1.0 }))
                .collect();
            let labels = vec![("job".into(), job.into()), ("instance".into(), instance.into())];
            out.push(GenSeries { name: "up".into(), labels, samples });
        }
    }
    out
}

fn openmetrics(series: &[GenSeries]) -> String {
    let mut out = String::new();
    for s in series {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        for &(t, v) in &s.samples {
            let _ = writeln!(out, "{}{{{}}} {v} {}.{:03}", s.name, labels.join(","), t / 1000, t % 1000);
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Line protocol in time order, as agents send it (the downsampler counts points far behind its
/// watermark as late).
fn line_protocol(series: &[GenSeries]) -> Vec<String> {
    let mut lines: Vec<(i64, String)> = Vec::new();
    for s in series {
        let tags: String = s.labels.iter().map(|(k, v)| format!(",{k}={v}")).collect();
        lines.extend(s.samples.iter().map(|&(t, v)| (t, format!("{}{tags} value={v} {t}\n", s.name))));
    }
    lines.sort_by_key(|(t, _)| *t);
    let mut bodies = vec![String::new()];
    for (_, line) in lines {
        if bodies.last().is_some_and(|b| b.len() > 1 << 20) {
            bodies.push(String::new());
        }
        bodies.last_mut().expect("one body").push_str(&line);
    }
    bodies
}

struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &std::path::Path, series: &[GenSeries]) -> Self {
        require("prometheus");
        require("promtool");
        let om = dir.join("data.om");
        std::fs::write(&om, openmetrics(series)).unwrap();
        let tsdb = dir.join("tsdb");
        let status = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&tsdb)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "promtool tsdb create-blocks-from openmetrics failed");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=10y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log_to(&log))
            .spawn()
            .expect("start prometheus");
        let p = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = agent().get(&p.url("/-/ready")).call()
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        show_if_failing(&self.log);
    }
}

fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().expect("request");
    let status = r.status().as_u16();
    let body = r.body_mut().with_config().limit(1 << 30).read_to_string().unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}")))
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= 1e-9 * scale || scale < 1e-12
}

fn value_of(v: &Value) -> f64 {
    match v.as_str().unwrap() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    }
}

/// Labels → points, for comparison regardless of order.
fn series_map(result: &Value, kind: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out = BTreeMap::new();
    for s in result.as_array().unwrap() {
        let key = s["metric"].to_string();
        let points: Vec<(String, f64)> = match kind {
            "vector" => vec![(s["value"][0].to_string(), value_of(&s["value"][1]))],
            _ => s["values"].as_array().unwrap().iter().map(|p| (p[0].to_string(), value_of(&p[1]))).collect(),
        };
        assert!(out.insert(key.clone(), points).is_none(), "duplicate series {key}");
    }
    out
}

/// Whether an answer holds at least one sample.
fn has_data(answer: &Value) -> bool {
    let result = &answer["data"]["result"];
    result.as_array().is_some_and(|r| !r.is_empty() && !r[0].is_number() && !r[0].is_string())
}

/// The difference between two answers, if any.
fn differ(query: &str, prom: &(u16, Value), ours: &(u16, Value)) -> Option<String> {
    let (p, y) = (&prom.1, &ours.1);
    if p["status"] != y["status"] {
        return Some(format!("status: prometheus {} {p}, yaffle {} {y}", prom.0, ours.0));
    }
    if p["status"] == "error" {
        return (p["errorType"] != y["errorType"]).then(|| format!("errorType: prometheus {p}, yaffle {y}"));
    }
    let (pd, yd) = (&p["data"], &y["data"]);
    if pd["resultType"] != yd["resultType"] {
        return Some(format!("resultType: prometheus {}, yaffle {}", pd["resultType"], yd["resultType"]));
    }
    let kind = pd["resultType"].as_str().unwrap();
    if kind == "scalar" || kind == "string" {
        let same = pd["result"][0] == yd["result"][0]
            && if kind == "scalar" {
                close(value_of(&pd["result"][1]), value_of(&yd["result"][1]))
            } else {
                pd["result"][1] == yd["result"][1]
            };
        return (!same).then(|| format!("prometheus {pd}, yaffle {yd}"));
    }
    let (pm, ym) = (series_map(&pd["result"], kind), series_map(&yd["result"], kind));
    if pm.keys().ne(ym.keys()) {
        let only_p: Vec<_> = pm.keys().filter(|k| !ym.contains_key(*k)).take(3).collect();
        let only_y: Vec<_> = ym.keys().filter(|k| !pm.contains_key(*k)).take(3).collect();
        return Some(format!(
            "label sets: {} vs {}; only prometheus {only_p:?}, only yaffle {only_y:?}",
            pm.len(),
            ym.len()
        ));
    }
    for (k, pp) in &pm {
        let yp = &ym[k];
        if pp.len() != yp.len() {
            return Some(format!("{k}: {} points from prometheus, {} from yaffle", pp.len(), yp.len()));
        }
        for (a, b) in pp.iter().zip(yp) {
            if a.0 != b.0 || !close(a.1, b.1) {
                return Some(format!("{k}: prometheus {a:?}, yaffle {b:?}"));
            }
        }
    }
    if query.starts_with("sort") {
        let order = |r: &Value| r.as_array().unwrap().iter().map(|s| s["metric"].to_string()).collect::<Vec<_>>();
        if order(&pd["result"]) != order(&yd["result"]) {
            return Some("order differs".into());
        }
    }
    None
}

/// Expressions of the corpus; each runs as instant queries and as range queries.
fn expressions(end_ms: i64) -> Vec<String> {
    let mut e: Vec<String> = [
        "http_requests_total",
        "http_requests_total{job=\"api\"}",
        "http_requests_total{job!=\"api\",method=~\"g.*\"}",
        "http_requests_total{instance!~\"0|1\"}",
        "{__name__=~\"http_.*\",method=\"post\"}",
        "up",
        "up == 0",
        "up != bool 1",
        "node_temperature_celsius offset 1h",
        "node_temperature_celsius offset -10m",
        "node_temperature_celsius > 21",
        "21 < node_temperature_celsius",
        "node_temperature_celsius * 2 - 1",
        "-node_temperature_celsius",
        "node_temperature_celsius % 3",
        "node_temperature_celsius ^ 0.5",
        "2 ^ 3 + 1",
        "1 > bool 2",
        "time()",
        "vector(1)",
        "scalar(up{job=\"api\",instance=\"0\"})",
        "timestamp(up)",
        "timestamp(node_temperature_celsius * 1)",
        "sum(http_requests_total)",
        "sum by (job) (http_requests_total)",
        "sum without (instance) (http_requests_total)",
        "avg by (dc) (node_temperature_celsius)",
        "min by (host) (node_temperature_celsius)",
        "max(node_temperature_celsius)",
        "count by (job) (up)",
        "group by (job) (up)",
        "stddev(node_temperature_celsius)",
        "stdvar by (dc) (node_temperature_celsius)",
        "topk(3, node_temperature_celsius)",
        "bottomk(2, node_temperature_celsius) by (dc)",
        "quantile(0.9, node_temperature_celsius)",
        "quantile by (dc) (0.25, node_temperature_celsius)",
        "count_values(\"v\", up)",
        "sum by (__name__) ({__name__=~\"up|node_temperature_celsius\"})",
        "rate(http_requests_total[5m])",
        "rate(http_requests_total[1h])",
        "irate(http_requests_total[5m])",
        "increase(http_requests_total[10m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "delta(node_temperature_celsius[15m])",
        "idelta(node_temperature_celsius[5m])",
        "deriv(node_temperature_celsius[30m])",
        "predict_linear(node_temperature_celsius[1h], 3600)",
        "resets(http_requests_total[1d])",
        "changes(up[3h])",
        "holt_winters(node_temperature_celsius[30m], 0.5, 0.5)",
        "avg_over_time(node_temperature_celsius[10m])",
        "sum_over_time(node_temperature_celsius[10m])",
        "min_over_time(node_temperature_celsius[1h])",
        "max_over_time(node_temperature_celsius[1h])",
        "count_over_time(up[1h])",
        "last_over_time(node_temperature_celsius[10m])",
        "present_over_time(up[10m])",
        "quantile_over_time(0.5, node_temperature_celsius[30m])",
        "stddev_over_time(node_temperature_celsius[30m])",
        "stdvar_over_time(node_temperature_celsius[30m])",
        "absent(nonexistent_metric{job=\"x\"})",
        "absent(up)",
        "absent_over_time(up{job=\"api\",instance=\"1\"}[5m])",
        "absent_over_time(nonexistent[5m])",
        "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(request_duration_seconds_bucket[10m])))",
        "label_replace(up, \"inst\", \"i-$1\", \"instance\", \"(.*)\")",
        "label_replace(up, \"job\", \"\", \"job\", \"api\")",
        "label_join(up, \"both\", \"/\", \"job\", \"instance\")",
        "abs(delta(node_temperature_celsius[5m]))",
        "ceil(node_temperature_celsius)",
        "floor(node_temperature_celsius)",
        "round(node_temperature_celsius, 0.5)",
        "sqrt(node_temperature_celsius)",
        "exp(node_temperature_celsius / 10)",
        "ln(node_temperature_celsius)",
        "log2(node_temperature_celsius)",
        "log10(node_temperature_celsius)",
        "sgn(delta(node_temperature_celsius[5m]))",
        "clamp(node_temperature_celsius, 20, 22)",
        "clamp_min(node_temperature_celsius, 21)",
        "clamp_max(node_temperature_celsius, 21)",
        "sin(node_temperature_celsius) + cos(node_temperature_celsius)",
        "deg(atan(node_temperature_celsius))",
        "node_temperature_celsius atan2 on (host, dc) node_temperature_celsius",
        "pi()",
        "hour()",
        "day_of_week()",
        "day_of_month(timestamp(up))",
        "days_in_month(vector(time()))",
        "year() + month() + minute() + day_of_year()",
        "sort(node_temperature_celsius)",
        "sort_desc(sum by (host) (node_temperature_celsius))",
        "http_requests_total / on (instance, job) group_left up",
        "up * on (job) group_left sum by (job) (http_requests_total)",
        "sum by (job) (http_requests_total) / on (job) group_right up",
        "http_requests_total{method=\"get\"} / ignoring (method) http_requests_total{method=\"post\"}",
        "http_requests_total > on (job, instance, method) group_left http_requests_total offset 1h",
        "up and on (job) up == 0",
        "node_temperature_celsius unless node_temperature_celsius > 21",
        "up or vector(0)",
        "http_requests_total + on (job) http_requests_total",
        "http_requests_total + http_requests_total",
        "max_over_time(rate(http_requests_total{job=\"api\"}[5m])[30m:1m])",
        "avg_over_time(node_temperature_celsius[1h:5m])",
        "rate(sum by (job) (http_requests_total)[10m:])",
        "node_temperature_celsius @ end()",
        "node_temperature_celsius @ start()",
        "rate(http_requests_total[5m] @ end())",
        "sum(rate(http_requests_total[5m] offset 30m))",
        "deriv(sum(node_temperature_celsius)[30m:2m])",
        "vector(time()) - on () group_left timestamp(up)",
        "rate(http_requests_total)",
        "sum(",
        "node_temperature_celsius[5m] + 1",
        "label_replace(up, \"1bad\", \"x\", \"job\", \"(.*)\")",
        "\"a string\"",
        "node_temperature_celsius[10m]",
        "http_requests_total[2m]",
        "up offset 1h and up",
        "count(up offset 20h)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    e.push(format!("up @ {}", secs(end_ms - 21 * 3600 * S - 30 * S)));
    e.push(format!("rate(http_requests_total[10m] @ {})", secs(end_ms - 5 * 3600 * S)));
    e
}

#[test]
fn prometheus_api_answers_as_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    // Data up to two hours ago (Yaffle's default write bounds accept it), aligned to an hour so
    // dashboards' steps line up with the rollup windows.
    let now_ms = chrono_now_ms();
    let end_ms = (now_ms - 2 * 3600 * S) / (3600 * S) * (3600 * S);
    let begun = Instant::now();
    let series = generate(end_ms);
    let total: usize = series.iter().map(|s| s.samples.len()).sum();
    let prom = Prometheus::start(dir.path(), &series);
    let yaffle = Yaffle::start(&dir.path().join("yaffle"), &[]);
    for body in line_protocol(&series) {
        let (status, text) = yaffle.write("/write?db=prometheus&precision=ms", &body);
        assert_eq!(status, 204, "{text}");
    }
    eprintln!("data loaded into both in {:?}", begun.elapsed());
    let stored = yaffle.wait_count("database = 'prometheus'", total as u64, Duration::from_secs(120));
    assert_eq!(stored, total as u64);

    let end = end_ms;
    let instants = [end, end - 3600 * S + 7 * S, end - 19 * 3600 * S - 2 * 60 * S, end + 4 * 60 * S, end + 10 * 60 * S];
    // (start, end, step) in ms: Grafana-style aligned and unaligned.
    let ranges = [
        (end - 3600 * S, end, 15 * S),
        (end - 6 * 3600 * S + 1234, end - 1234, 60 * S),
        (end - 86_400 * S, end, 300 * S),
        (end - SPAN_MS, end, 3600 * S),
        (end - 21 * 3600 * S, end - 18 * 3600 * S, 120 * S),
    ];
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut with_data = 0;
    let mut range_paths = Vec::new();
    let begun = Instant::now();
    for (i, q) in expressions(end).iter().enumerate() {
        let t = instants[i % instants.len()];
        let path = format!("/api/v1/query?query={}&time={}&resolution=raw", enc(q), secs(t));
        let (p, y) = (get(&prom.url(&path)), get(&yaffle.url(&path)));
        if let Some(d) = differ(q, &p, &y) {
            failures.push(format!("instant {q} @ {}: {d}", secs(t)));
        }
        with_data += usize::from(has_data(&p.1));
        let (start, stop, step) = ranges[i % ranges.len()];
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            enc(q),
            secs(start),
            secs(stop),
            step as f64 / 1000.0
        );
        let (p, y) = (get(&prom.url(&path)), get(&yaffle.url(&format!("{path}&resolution=raw"))));
        if let Some(d) = differ(q, &p, &y) {
            failures.push(format!("range {q} [{}, {}] step {}: {d}", secs(start), secs(stop), step / 1000));
        }
        with_data += usize::from(has_data(&p.1));
        compared += 2;
        range_paths.push((q.clone(), path, p));
    }
    // The metadata endpoints, as Grafana's label and metric browser calls them.
    let (a, b) = (secs(end - 6 * 3600 * S), secs(end));
    for path in [
        format!("/api/v1/labels?start={a}&end={b}"),
        format!("/api/v1/label/__name__/values?start={a}&end={b}"),
        format!("/api/v1/label/job/values?start={a}&end={b}"),
        format!("/api/v1/series?match[]={}&start={a}&end={b}", enc("up")),
        format!(
            "/api/v1/series?match[]={}&match[]={}&start={a}&end={b}",
            enc("up{job=\"api\"}"),
            enc("node_temperature_celsius{host=\"a\"}")
        ),
        format!("/api/v1/labels?match[]={}&start={a}&end={b}", enc("up")),
    ] {
        let (p, y) = (get(&prom.url(&path)), get(&yaffle.url(&path)));
        if p.1 != y.1 {
            failures.push(format!("{path}: prometheus {}, yaffle {}", p.1, y.1));
        }
        compared += 1;
    }
    eprintln!("{compared} answers compared in {:?}, {with_data} of them with samples", begun.elapsed());
    assert!(compared >= 150, "the corpus must hold at least 150 queries, has {compared}");
    assert!(with_data >= 150, "only {with_data} answers hold samples: the corpus tests too little");
    assert!(failures.is_empty(), "{} of {compared} answers differ:\n{}", failures.len(), failures.join("\n"));

    rollups_change_no_answer_auto_picks(&yaffle, &range_paths);
    promtool_is_a_client(&yaffle, end);
    grafana_requests(&yaffle, end);
}

/// Once the downsampler has written the rollups, `resolution=auto` (the default) answers every
/// range query of the corpus as Prometheus does, reading rollups where its rules allow; forced onto
/// 5m rollups, the answers that differ are counted (the approximation the docs describe).
fn rollups_change_no_answer_auto_picks(yaffle: &Yaffle, range_paths: &[(String, String, (u16, Value))]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let windows = || yaffle.sql("SELECT count(*) AS n FROM rollups WHERE resolution_s = 300")[0]["n"].as_u64().unwrap();
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = windows();
        if now > 0 && now == last {
            break;
        }
        assert!(Instant::now() < deadline, "the downsampler wrote no stable 5m rollups within 120 s ({now})");
        last = now;
    }
    let (mut failures, mut from_rollups, mut forced_differ) = (Vec::new(), 0, 0);
    for (q, path, prom) in range_paths {
        let mut r = agent().get(&yaffle.url(path)).call().unwrap();
        let served =
            r.headers().get("x-yaffle-resolution").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        if served.contains('m') || served.contains('h') {
            from_rollups += 1;
        }
        if let Some(d) = differ(q, prom, &(200, body)) {
            failures.push(format!("auto ({served}) {q}: {d}"));
        }
        forced_differ += usize::from(differ(q, prom, &get(&yaffle.url(&format!("{path}&resolution=5m")))).is_some());
    }
    eprintln!(
        "resolution=auto read rollups for {from_rollups} of {} range queries; forced to 5m, {forced_differ} answers differ from Prometheus",
        range_paths.len()
    );
    assert!(from_rollups >= 20, "auto read rollups for only {from_rollups} queries");
    assert!(failures.is_empty(), "{} auto answers differ:\n{}", failures.len(), failures.join("\n"));
}

/// `promtool query` against Yaffle prints what it printed against Prometheus.
fn promtool_is_a_client(yaffle: &Yaffle, end: i64) {
    let server = yaffle.url("");
    let run = |args: &[&str]| {
        let out = Command::new("promtool").arg("query").args(args).output().unwrap();
        assert!(out.status.success(), "promtool query {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let t = secs(end);
    let instant = run(&["instant", "--time", &t, &server, "sum by (job) (up)"]);
    assert!(instant.contains(r#"{job="api"} => 2 @["#), "{instant}");
    let range =
        run(&["range", "--start", &secs(end - 600 * S), "--end", &t, "--step", "5m", &server, "up{job=\"web\"}"]);
    assert_eq!(range.matches(" @[").count(), 6, "two series, three steps each: {range}");
    let series = run(&["series", "--match", "up", "--start", &secs(end - 3600 * S), "--end", &t, &server]);
    assert_eq!(series.lines().count(), 4, "{series}");
    let labels = run(&["labels", "--start", &secs(end - 3600 * S), "--end", &t, &server, "job"]);
    assert_eq!(labels.split_whitespace().collect::<Vec<_>>(), ["api", "web"], "{labels}");
}

/// The calls Grafana's Prometheus data source makes: its health check, buildinfo, metadata, the
/// metric browser, and a panel's `query_range` as a form POST with start and end aligned to the step.
fn grafana_requests(yaffle: &Yaffle, end: i64) {
    let a = agent();
    let (status, health) = get(&yaffle.url(&format!("/api/v1/query?query=1%2B1&time={}", secs(end))));
    assert_eq!(status, 200);
    assert_eq!(health["data"], serde_json::json!({"resultType": "scalar", "result": [end / 1000, "2"]}));
    let (status, info) = get(&yaffle.url("/api/v1/status/buildinfo"));
    assert_eq!(status, 200);
    assert!(info["data"]["version"].as_str().unwrap().starts_with("2."), "{info}");
    let (_, meta) = get(&yaffle.url("/api/v1/metadata"));
    assert_eq!(meta["status"], "success");
    let step = 60 * S;
    let (start, stop) = ((end - 3 * 3600 * S) / step * step, end / step * step);
    let form = format!(
        "query={}&start={}&end={}&step=60",
        enc("sum by (job) (rate(http_requests_total[$__rate_interval]))".replace("$__rate_interval", "2m").as_str()),
        secs(start),
        secs(stop)
    );
    let mut r = a
        .post(&yaffle.url("/api/v1/query_range"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(&form)
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{body}");
    assert_eq!(result[0]["values"].as_array().unwrap().len() as i64, (stop - start) / step + 1);
    // A bad query is Prometheus' error shape.
    let (status, bad) = get(&yaffle.url("/api/v1/query?query=sum("));
    assert_eq!(status, 400);
    assert_eq!(bad["errorType"], "bad_data");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn secs(ms: i64) -> String {
    if ms % 1000 == 0 { format!("{}", ms / 1000) } else { format!("{}.{:03}", ms / 1000, ms % 1000) }
}
