//! Rollups through crashes, checked against a batch recomputation: standalone's in-process
//! downsampler on the log's `downsample` cursor, and `yaffle downsample` workers on a real broker writing
//! to the ClickHouse cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::prelude::{BASE64_STANDARD, Engine as _};

use crate::support::{BIN, Yaffle, free_port, log_to, show_if_failing};
use crate::{clickhouse, kafka};

const S: i64 = 1_000_000_000;

/// The current time rounded down to a tenth of a second if it is past `last` (then also stored
/// there); otherwise sleeps a little and returns `None`.
fn next_tenth(last: &mut i64) -> Option<i64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
    let ts = now - now % (S / 10);
    if ts <= *last {
        std::thread::sleep(Duration::from_millis(10));
        return None;
    }
    *last = ts;
    Some(ts)
}

/// (host, resolution s, window start s) -> (count, sum, min, max, first, last)
type Table = BTreeMap<(String, u64, i64), (u64, i64, i64, i64, i64, i64)>;

fn fold(t: &mut Table, key: (String, u64, i64), v: i64) {
    let e = t.entry(key).or_insert((0, 0, i64::MAX, i64::MIN, v, v));
    e.0 += 1;
    e.1 += v;
    e.2 = e.2.min(v);
    e.3 = e.3.max(v);
    e.5 = v; // points arrive in time order
}

#[test]
fn standalone_rollups_survive_sigkills_and_equal_a_batch_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("YAFFLE_DOWNSAMPLE__RESOLUTIONS", r#"["2s", "6s"]"#),
        ("YAFFLE_DOWNSAMPLE__ALLOWED_LATENESS", "1s"),
        ("YAFFLE_DOWNSAMPLE__REPLAY_MARGIN", "2s"),
        ("YAFFLE_DOWNSAMPLE__COMMIT_INTERVAL", "100ms"),
    ];
    let mut yaffle = Yaffle::start(dir.path(), &env);
    let log = dir.path().join("stderr.log");
    let mut expected = Table::new();
    let mut last = 0;
    let mut kills = 0;
    // ~24 s of points at 10 per second per host, event time = now; SIGKILL every ~5 s.
    let start = Instant::now();
    let mut next_kill = Duration::from_secs(5);
    let mut i: i64 = 0;
    while start.elapsed() < Duration::from_secs(24) {
        let Some(ts) = next_tenth(&mut last) else { continue };
        let mut body = String::new();
        for h in 0..3 {
            let v = (i * 7 + h * 13) % 101;
            body.push_str(&format!("cpu,host=h{h} usage={v}i {ts}\n"));
            for res in [2, 6] {
                let r = res * S;
                fold(&mut expected, (format!("h{h}"), res as u64, ts.div_euclid(r) * r / S), v);
            }
        }
        i += 1;
        let (status, text) = yaffle.write("/write?db=ds&precision=ns", &body);
        assert_eq!(status, 204, "{text}");
        if start.elapsed() > next_kill {
            yaffle.kill9_and_restart();
            kills += 1;
            next_kill += Duration::from_secs(5);
        }
    }
    assert!(kills >= 4, "killed {kills} times");
    // Windows closed by the last point: end + lateness at or before it.
    expected.retain(|(_, res, start), _| (start + *res as i64 + 1) * S <= last);

    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let rows = yaffle.sql(
            "SELECT tags['host'] AS host, resolution_s AS r, CAST(time AS BIGINT) / 1000000000 AS t, count AS n, \
             CAST(sum AS BIGINT) AS s, CAST(min AS BIGINT) AS lo, CAST(max AS BIGINT) AS hi, \
             CAST(first AS BIGINT) AS f, CAST(last AS BIGINT) AS l FROM rollups",
        );
        let mut got = Table::new();
        for r in &rows {
            let n = |k: &str| r[k].as_i64().unwrap();
            let key = (r["host"].as_str().unwrap().to_string(), n("r") as u64, n("t"));
            let value = (n("n") as u64, n("s"), n("lo"), n("hi"), n("f"), n("l"));
            assert!(got.insert(key.clone(), value).is_none(), "{key:?} twice in the rollups view");
        }
        if expected.keys().all(|k| got.contains_key(k)) || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    show_if_failing(&log);
    for (k, e) in &expected {
        assert_eq!(got.get(k), Some(e), "window {k:?} after {kills} SIGKILLs");
    }
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.len() <= 6, "only windows still open at the end may be extra: {extra:?}");

    // The windows' sketches merged in SQL: each host's top and bottom over the run, within 1 %.
    let rows = yaffle.sql(
        "SELECT tags['host'] AS host, sketch_quantile(sketch, 1) AS top, max(max) AS hi, \
         sketch_quantile(sketch, 0) AS bottom, min(min) AS lo FROM rollups WHERE resolution_s = 6 GROUP BY 1",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        let f = |k: &str| r[k].as_f64().unwrap();
        assert!((f("top") - f("hi")).abs() <= f("hi") * 0.01, "{r:?}");
        assert!((f("bottom") - f("lo")).abs() <= f("lo") * 0.01, "{r:?}");
    }
}

/// Every value of each rollup key, as written: (host, resolution s, window start s) -> (ts, value).
type Values = BTreeMap<(String, u64, i64), Vec<(i64, i64)>>;

/// Config sections teeing into `topic` (4 partitions) on `brokers` and reading it back in a consumer
/// group of the same name (4 s sessions: a killed worker's partitions move on quickly), with
/// `downsample` as further `[downsample]` settings.
fn kafka_sections(brokers: &str, topic: &str, downsample: &str) -> String {
    format!(
        r#"
[sinks.kafka]
enabled = true
brokers = "{brokers}"
topic = "{topic}"
partitions = 4
linger = "5ms"
[downsample]
{downsample}
[downsample.kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{topic}"
session_timeout = "{session}s"
"#,
        session = SESSION.as_secs()
    )
}

/// (count, sum, min, max, first, last) of a window's (timestamp, value)s in time order.
fn recompute(points: &[(i64, i64)]) -> (u64, f64, f64, f64, f64, f64) {
    let vs = points.iter().map(|p| p.1);
    (
        points.len() as u64,
        vs.clone().sum::<i64>() as f64,
        vs.clone().min().unwrap() as f64,
        vs.max().unwrap() as f64,
        points.first().unwrap().1 as f64,
        points.last().unwrap().1 as f64,
    )
}

/// A `yaffle downsample` process, logging to its own file.
struct Worker {
    child: Child,
}

impl Worker {
    fn start(config: &Path, log: &Path) -> Self {
        let child = Command::new(BIN)
            .arg("downsample")
            .env("YAFFLE_CONFIG", config)
            .env("YAFFLE_DOWNSAMPLE__BIND", format!("127.0.0.1:{}", free_port()))
            .env("RUST_LOG", "warn,yaffle_downsample=debug")
            .stdout(Stdio::null())
            .stderr(log_to(log))
            .spawn()
            .expect("start yaffle downsample");
        Self { child }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: leaves the group cleanly.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "yaffle downsample did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On a failing test, prints every worker log's partition events (assignments, rebuilds, seeks) and
/// warnings: what a stuck partition needs explained.
struct WorkerLogsOnFailure<'a>(&'a Path);

impl Drop for WorkerLogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.0).unwrap().map(|e| e.unwrap().path()).collect();
        logs.retain(|p| p.file_name().unwrap().to_string_lossy().starts_with("worker-"));
        logs.sort();
        let keep = std::env::temp_dir().join(format!("yaffle-proof-{}", std::process::id()));
        eprintln!("worker logs kept in {}", keep.display());
        let _ = std::fs::create_dir_all(&keep);
        for log in logs {
            let _ = std::fs::copy(&log, keep.join(log.file_name().unwrap()));
            eprintln!("--- partition events in {} ---", log.display());
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let events = ["assigned", "rebuilt", "seeking", "started", "WARN", "ERROR"];
            for line in text.lines().filter(|l| events.iter().any(|e| l.contains(e))) {
                eprintln!("{line}");
            }
        }
    }
}

/// The group's sessions in [`kafka_sections`].
const SESSION: Duration = Duration::from_secs(4);

/// A change to the proof's consumer group.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// SIGKILL of the worker in this slot.
    Kill(usize),
    /// A new worker in this slot.
    Replace(usize),
    /// A third worker joins.
    Add,
    /// The third worker stops (SIGTERM, leaving the group).
    Remove,
}

/// xorshift64*: random kill moments, reproducible from the printed seed (`PROOF_SEED`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// `key=value` of a log line.
fn log_field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// The proof of the Kafka tier: `yaffle standalone` tees points into a real broker (tansu); two
/// `yaffle downsample` workers, one killed with SIGKILL at ten random moments (replaced once its session has expired), a
/// third added and then removed, write rollups to the real 2x2 ClickHouse cluster. The final rollups
/// equal a batch recomputation over the points written: exact count, sum, min, max, first and last,
/// quantiles within the sketch's relative accuracy. Prints how long rebuilds took against the live rate.
#[test]
fn workers_killed_ten_times_and_rebalanced_write_rollups_equal_to_a_batch_recomputation() {
    const HOSTS: i64 = 8;
    const RESOLUTIONS: [i64; 2] = [2, 10];
    const LATENESS: i64 = 1;
    const ACCURACY: f64 = 0.01;
    let _cluster = clickhouse::exclusive_cluster();
    let brokers = kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let _logs = WorkerLogsOnFailure(dir.path());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let downsample = format!(
        r#"resolutions = ["2s", "10s"]
allowed_lateness = "{LATENESS}s"
replay_margin = "3s"
commit_interval = "200ms"
sketch = {{ relative_accuracy = {ACCURACY} }}"#
    );
    let sections = kafka_sections(&brokers, &format!("proof-{}-{nanos}", std::process::id()), &downsample);
    let config = PathBuf::from(clickhouse::config(dir.path(), &clickhouse::database("proof"), "", &sections));
    let ingest = Yaffle::start(&dir.path().join("data"), &[("YAFFLE_CONFIG", config.to_str().unwrap())]);
    let log = |i: usize| dir.path().join(format!("worker-{i}.log"));
    let mut workers = [Some(Worker::start(&config, &log(0))), Some(Worker::start(&config, &log(1)))];
    let mut extra: Option<Worker> = None;

    // One membership change at a time, at random moments: a SIGKILL, then the survivor alone until the
    // victim's session expires, then its replacement joins. tansu 0.6 (unlike Kafka) can leave a
    // partition assigned to a member whose session expires while the group is forming, read by nobody
    // until the next rebalance; a replacement joining before the victim expired provokes exactly that.
    let seed = std::env::var("PROOF_SEED").map_or(nanos as u64 | 1, |s| s.parse().unwrap());
    eprintln!("kill moments from PROOF_SEED={seed}");
    let mut rng = Rng(seed);
    let mut plan: Vec<(Duration, Change)> = Vec::new();
    let mut at = Duration::from_secs(3);
    for i in 0..10 {
        if i == 3 || i == 7 {
            plan.push((at, if i == 3 { Change::Add } else { Change::Remove }));
            at += Duration::from_secs(3);
        }
        at += Duration::from_millis(rng.below(2_000));
        let victim = rng.below(2) as usize;
        plan.push((at, Change::Kill(victim)));
        at += SESSION + Duration::from_secs(1);
        plan.push((at, Change::Replace(victim)));
        at += Duration::from_secs(3);
    }
    let run = at + Duration::from_secs(2);

    let mut values = Values::new();
    let (mut last, mut step, mut killed, mut restarts) = (0, 0i64, 0, 2);
    let start = Instant::now();
    while start.elapsed() < run {
        let Some(ts) = next_tenth(&mut last) else { continue };
        let mut body = String::new();
        for h in 0..HOSTS {
            let v = 1 + rng.below(1000) as i64;
            body.push_str(&format!("proof,host=h{h} v={v} {ts}\n"));
            for res in RESOLUTIONS {
                let key = (format!("h{h}"), res as u64, ts.div_euclid(res * S) * res);
                values.entry(key).or_default().push((ts, v));
            }
        }
        step += 1;
        let (status, text) = ingest.write("/write?db=proof&precision=ns", &body);
        assert_eq!(status, 204, "{text}");
        while let Some(&(at, change)) = plan.first()
            && start.elapsed() >= at
        {
            plan.remove(0);
            match change {
                Change::Kill(victim) => {
                    workers[victim].take().expect("a worker to kill").kill9();
                    killed += 1;
                }
                Change::Replace(victim) => {
                    workers[victim] = Some(Worker::start(&config, &log(restarts)));
                    restarts += 1;
                }
                Change::Add => extra = Some(Worker::start(&config, &log(99))),
                Change::Remove => extra.take().expect("the added worker").stop(),
            }
        }
    }
    assert_eq!(killed, 10, "ten SIGKILLs");
    let live_rate = (step * HOSTS) as f64 / run.as_secs_f64();
    // Windows the last point closed: end + lateness at or before it.
    values.retain(|(_, res, start), _| (start + *res as i64 + LATENESS) * S <= last);

    let query = "SELECT tag_values[indexOf(tag_keys, 'host')] AS host, resolution_s AS r, \
                 intDiv(window_start_ns, 1000000000) AS t, count AS n, sum AS s, min AS lo, max AS hi, \
                 first AS f, last AS l, sketch, database, measurement, series_id, field, window_start_ns, version \
                 FROM rollups FINAL WHERE measurement = 'proof'";
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        clickhouse::sync_replicas("proof", "rollups_local");
        let rows = ingest.sql(query);
        let have: std::collections::HashSet<_> = rows
            .iter()
            .map(|r| (r["host"].as_str().unwrap().to_string(), r["r"].as_u64().unwrap(), r["t"].as_i64().unwrap()))
            .collect();
        if values.keys().all(|k| have.contains(k)) || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(workers);
    let mut seen = std::collections::HashSet::new();
    let mut checked = 0;
    for r in &rows {
        let key = (r["host"].as_str().unwrap().to_string(), r["r"].as_u64().unwrap(), r["t"].as_i64().unwrap());
        assert!(seen.insert(key.clone()), "{key:?} twice after FINAL");
        let Some(points) = values.get(&key) else { continue }; // still open at the end
        let f = |k: &str| r[k].as_f64().unwrap();
        let got = (r["n"].as_u64().unwrap(), f("s"), f("lo"), f("hi"), f("f"), f("l"));
        assert_eq!(
            got,
            recompute(points),
            "window {key:?} (count, sum, min, max, first, last) after {killed} SIGKILLs"
        );
        let mut vs: Vec<i64> = points.iter().map(|p| p.1).collect();
        vs.sort_unstable();
        // The stored form is DataDog's binary DDSketch encoding in base64: read it as any consumer would.
        let bytes = BASE64_STANDARD.decode(r["sketch"].as_str().unwrap()).unwrap();
        let sketch = sketches_ddsketch::DDSketch::from_java_bytes(&bytes).unwrap();
        assert_eq!(sketch.count(), points.len(), "window {key:?}: values in the sketch");
        for q in [0.5, 0.9, 0.99] {
            let exact = vs[((vs.len() - 1) as f64 * q) as usize] as f64;
            let est = sketch.quantile(q).unwrap().unwrap();
            assert!((est - exact).abs() <= exact * ACCURACY * 1.01, "window {key:?} q{q}: {est} vs exact {exact}");
        }
        checked += 1;
    }
    let missing: Vec<_> = values.keys().filter(|k| !seen.contains(*k)).take(5).collect();
    assert!(missing.is_empty(), "windows never written, e.g. {missing:?}");
    assert_eq!(checked, values.len());

    // Rebuilds: every assignment after the first replayed from the commit back.
    let mut rebuilds: Vec<(f64, f64)> = Vec::new();
    for i in (0..restarts).chain([99]) {
        let text = std::fs::read_to_string(log(i)).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("windows rebuilt")) {
            rebuilds.push((log_field(line, "points").unwrap(), log_field(line, "seconds").unwrap()));
        }
    }
    assert!(rebuilds.len() >= 10, "at least one rebuild per SIGKILL, got {}", rebuilds.len());
    rebuilds.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (points, seconds) = rebuilds.iter().fold((0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1));
    let rebuild_rate = points / seconds;
    eprintln!(
        "{checked} windows equal the recomputation after {killed} SIGKILLs, a worker added and removed; \
         {} rebuilds: median {:.3} s, max {:.3} s, {points} points replayed at {rebuild_rate:.0} points/s, \
         {:.1}x the live rate of {live_rate:.0} points/s",
        rebuilds.len(),
        rebuilds[rebuilds.len() / 2].1,
        rebuilds.last().unwrap().1,
        rebuild_rate / live_rate,
    );
    assert!(rebuild_rate >= 3.0 * live_rate, "a rebuild replays at least 3x faster than the log grows");
}

/// `yaffle backfill` on the ClickHouse cluster from a real broker: a resolution added after the fact is
/// computed over history equal to a batch recomputation, and a shard's raw points wiped for a range
/// are written back from the log, counts exact; each run twice, changing nothing the second time.
#[test]
fn backfill_cli_computes_a_new_resolution_and_rebuilds_wiped_raw_points_on_clickhouse() {
    const HOSTS: i64 = 4;
    let _cluster = clickhouse::exclusive_cluster();
    let brokers = kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let sections = kafka_sections(&brokers, &format!("backfill-{}-{nanos}", std::process::id()), "");
    let db = clickhouse::database("backfill");
    let config = clickhouse::config(dir.path(), &db, "", &sections);
    // The cluster's ingest node: `yaffle ingest`, the store and the tee, queried through it.
    let ingest = Yaffle::start_as("ingest", &dir.path().join("data"), &[("YAFFLE_CONFIG", &config)]);

    // 20 s of points, 10 per second per host.
    let mut rng = Rng(nanos as u64 | 1);
    let mut values = Values::new();
    let (mut last, mut written) = (0, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let Some(ts) = next_tenth(&mut last) else { continue };
        let mut body = String::new();
        for h in 0..HOSTS {
            let v = 1 + rng.below(1000) as i64;
            body.push_str(&format!("bf,host=h{h} v={v} {ts}\n"));
            values.entry((format!("h{h}"), 4, ts.div_euclid(4 * S) * 4)).or_default().push((ts, v));
            written += 1;
        }
        let (status, text) = ingest.write("/write?db=bf&precision=ns", &body);
        assert_eq!(status, 204, "{text}");
    }
    let count = |filter: &str| {
        clickhouse::sync_replicas("backfill", "points_local");
        ingest.sql(&format!("SELECT count() AS n FROM points WHERE measurement = 'bf' {filter}"))[0]["n"]
            .as_u64()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("") < written && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count(""), written, "raw points stored");

    // The range: three whole 4 s windows well inside what was written.
    let first = values.keys().map(|k| k.2).min().unwrap();
    let (from, to) = (first + 8, first + 20);
    values.retain(|k, _| k.2 >= from && k.2 < to);
    let backfill = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("backfill")
            .args(["--from", &from.to_string(), "--to", &to.to_string()])
            .args(args)
            .env("YAFFLE_CONFIG", &config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "yaffle backfill {args:?}: {stderr}");
        stderr
    };
    let rollups = || {
        let rows = ingest.sql(
            "SELECT tag_values[indexOf(tag_keys, 'host')] AS host, intDiv(window_start_ns, 1000000000) AS t, \
             count AS n, sum AS s, min AS lo, max AS hi, first AS f, last AS l, database, measurement, series_id, \
             field, resolution_s, window_start_ns, version FROM rollups FINAL \
             WHERE measurement = 'bf' AND resolution_s = 4",
        );
        let mut got = BTreeMap::new();
        for r in &rows {
            let f = |k: &str| r[k].as_f64().unwrap();
            let key = (r["host"].as_str().unwrap().to_string(), 4, r["t"].as_i64().unwrap());
            let row = (r["n"].as_u64().unwrap(), f("s"), f("lo"), f("hi"), f("f"), f("l"));
            assert!(got.insert(key.clone(), row).is_none(), "{key:?} twice after FINAL");
        }
        got
    };
    let want: BTreeMap<_, _> = values.iter().map(|(k, points)| (k.clone(), recompute(points))).collect();
    assert_eq!(want.len(), 3 * HOSTS as usize);
    for run in 1..=2 {
        let report = backfill(&["--resolution", "4s"]);
        assert!(report.contains("backfill done"), "{report}");
        clickhouse::sync_replicas("backfill", "rollups_local");
        assert_eq!(rollups(), want, "4 s rollups over history, run {run}");
    }

    // Wipe shard 2's raw points of the range (node 3; replication carries it to node 4), then rebuild
    // that shard from the log.
    let in_range = format!("AND time_ns >= {} AND time_ns < {}", from * S, to * S);
    let range_count = count(&in_range);
    assert_eq!(range_count, 12 * 10 * HOSTS as u64, "points in the range before the wipe");
    let mut r = crate::support::agent()
        .post("http://127.0.0.1:28123/")
        .send(format!("ALTER TABLE {db}.points_local DELETE WHERE measurement = 'bf' {in_range}"))
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.body_mut().read_to_string().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&in_range) == range_count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let wiped = range_count - count(&in_range);
    assert!(wiped > 0, "shard 2 held some of the range");
    for run in 1..=2 {
        backfill(&["--target", "raw", "--shard", "2"]);
        assert_eq!(count(&in_range), range_count, "points of the range after the raw rebuild, run {run}");
        assert_eq!(count(""), written, "every point once after the raw rebuild, run {run}");
    }
}

/// `yaffle backfill` without Kafka reads standalone's own durable log: a resolution added after the
/// fact is computed over the history, exactly, and a second run changes nothing. While the server
/// runs, the log is refused as in use (its store must not get a second writer).
#[test]
fn backfill_without_kafka_reads_the_standalone_log() {
    const HOSTS: i64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let yaffle = Yaffle::start(&data, &[]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let t0 = (now - 120) / 10 * 10;
    let mut body = String::new();
    for i in 0..40 {
        for h in 0..HOSTS {
            body.push_str(&format!("bflog,host=h{h} v={} {}\n", i + h, (t0 + i) * S));
        }
    }
    let (status, text) = yaffle.write("/write?db=bflog&precision=ns", &body);
    assert_eq!(status, 204, "{text}");
    assert_eq!(yaffle.wait_count("database = 'bflog'", 40 * HOSTS as u64, Duration::from_secs(20)), 40 * HOSTS as u64);
    let backfill = || {
        Command::new(BIN)
            .args(["backfill", "--from", &t0.to_string(), "--to", &(t0 + 40).to_string(), "--resolution", "10s"])
            .env("YAFFLE_DATA_DIR", &data)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let refused = backfill();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("in use"), "backfill beside a running server: {stderr}");
    drop(yaffle);

    let windows = || {
        let out = Command::new(BIN)
            .args(["query", "--format", "csv"])
            .arg("SELECT count(*) AS windows, sum(count) AS points, sum(sum) AS total FROM rollups WHERE resolution_s = 10 AND measurement = 'bflog'")
            .env("YAFFLE_DATA_DIR", &data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Four whole 10 s windows per host, every point in one; the sum is sum(i + h).
    let total: i64 = (0..40).flat_map(|i| (0..HOSTS).map(move |h| i + h)).sum();
    let want = format!("windows,points,total\n{},{},{total}.0\n", 4 * HOSTS, 40 * HOSTS);
    for run in 0..2 {
        let out = backfill();
        assert!(out.status.success(), "backfill run {run}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(windows(), want, "after run {run}");
    }
}
