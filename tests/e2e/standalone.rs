//! The binary's own surface: `yaffle query`, and a curl-style write/read round trip.

use std::process::Command;
use std::time::Duration;

use crate::support::{BIN, Yaffle};

#[test]
fn curl_a_point_and_query_it_back_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let yaffle = Yaffle::start(dir.path(), &[]);
    let (status, body) = yaffle.write("/write?db=walk", "weather,city=Oslo temp=3.5 1700000000000000000");
    assert_eq!(status, 204, "{body}");
    assert_eq!(yaffle.wait_count("database = 'walk'", 1, Duration::from_secs(10)), 1);
    let out = Command::new(BIN)
        .args(["query", "--format", "csv", "SELECT measurement, tags['city'] AS city, field, value FROM points"])
        .env("YAFFLE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "measurement,city,field,value\nweather,Oslo,temp,3.5\n");
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let out = Command::new(BIN).arg("standalone").env("YAFFLE_LOG__FSYNC", "sometimes").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fsync must be"), "{}", String::from_utf8_lossy(&out.stderr));
}
