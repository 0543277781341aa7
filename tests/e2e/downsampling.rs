//! Standalone rollups: the in-process downsampler on the log's `kafka` cursor, killed with SIGKILL
//! several times while points arrive, ends with rollups equal to a batch recomputation, each window
//! once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{Yaffle, show_if_failing};

const S: i64 = 1_000_000_000;

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
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
        let ts = now - now % (S / 10);
        if ts <= last {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        last = ts;
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
}
