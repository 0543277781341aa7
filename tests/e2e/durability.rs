//! A `kill -9` under load loses no acknowledged point and duplicates none.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Yaffle, agent};

const WRITERS: usize = 4;
const LINES_PER_REQUEST: usize = 50;

#[test]
fn sigkill_under_load_loses_no_acknowledged_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaffle = Yaffle::start(dir.path(), &[]);
    let url = yaffle.url("/write?db=kill&precision=ns");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, stop, acked) = (url.clone(), Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let agent = agent();
                let mut seq = 0u64;
                // Bounded: stops when told, or after 20 000 requests.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let lines: String = (0..LINES_PER_REQUEST)
                        .map(|i| format!("load,writer=w{w} seq={}i {}\n", seq + i as u64, seq + i as u64 + 1))
                        .collect();
                    match agent.post(&url).send(&lines) {
                        Ok(r) if r.status() == 204 => {
                            let mut a = acked.lock().unwrap();
                            a.extend((0..LINES_PER_REQUEST as u64).map(|i| (w, seq + i)));
                        }
                        _ => std::thread::sleep(Duration::from_millis(5)),
                    }
                    seq += LINES_PER_REQUEST as u64;
                }
            })
        })
        .collect();
    // Let load build up, then kill without warning while writers keep going.
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = acked.lock().unwrap().len();
    assert!(before_kill > 1000, "load was running ({before_kill} points acknowledged)");
    yaffle.kill9_and_restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let stored = yaffle.wait_count("database = 'kill'", acked.len() as u64, Duration::from_secs(60));
    assert!(stored >= acked.len() as u64, "{stored} stored < {} acknowledged", acked.len());
    let rows = yaffle.sql("SELECT tags['writer'] AS w, value_int AS s FROM points WHERE database = 'kill'");
    let mut seen = HashSet::with_capacity(rows.len());
    for r in &rows {
        let w: usize = r["w"].as_str().unwrap()[1..].parse().unwrap();
        assert!(seen.insert((w, r["s"].as_u64().unwrap())), "duplicate point {r}");
    }
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(missing.is_empty(), "acknowledged points lost after kill -9: {missing:?} ...");
}
