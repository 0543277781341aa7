//! A `kill -9` under load loses no acknowledged point and duplicates none.

use std::time::Duration;

use crate::support::{Load, Yaffle, assert_exactly_once};

#[test]
fn sigkill_under_load_loses_no_acknowledged_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaffle = Yaffle::start(dir.path(), &[]);
    let load = Load::start(&yaffle.url("/write?db=kill&precision=ns"), 4, 50, Duration::ZERO);
    // Let load build up, then kill without warning while writers keep going.
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = load.acked();
    assert!(before_kill > 1000, "load was running ({before_kill} points acknowledged)");
    yaffle.kill9_and_restart();
    std::thread::sleep(Duration::from_millis(500));
    let acked = load.stop();
    let stored = yaffle.wait_count("database = 'kill'", acked.len() as u64, Duration::from_secs(60));
    assert!(stored >= acked.len() as u64, "{stored} stored < {} acknowledged", acked.len());
    assert_exactly_once(
        &yaffle,
        "SELECT tags['writer'] AS w, value_int AS s FROM points WHERE database = 'kill'",
        &acked,
    );
}
